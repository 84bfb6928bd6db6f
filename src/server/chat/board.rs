//! Whiteboard requests: open (the stored picture, then live changes), draw, undo, clear.
//! Changes are stored by the writer first and then fanned out to those with the board open.

use super::{Caller, Chat, Refusal};
use crate::protocol::{rules, BoardSegment, ErrorCode, RoomId, ServerMsg};
use crate::server::store::{NewSegment, WriteOp, WriteOutcome};

/// Batches per `board` frame: frames stay small (a socket's write buffer keeps the size of
/// the largest frame it sent).
const PICTURE_CHUNK: usize = 40;

fn board_seq(outcome: WriteOutcome) -> (i64, Option<u32>) {
    match outcome {
        WriteOutcome::Board { seq, stroke } => (seq, stroke),
        other => unreachable!("board writes answer with Board, not {other:?}"),
    }
}

impl Chat {
    /// Registers the connection for live changes first, then reads the picture: a change
    /// committed in between arrives live and is also in the picture; the client drops live
    /// events up to `upto`.
    pub(super) async fn open_board(&self, caller: &Caller<'_>, room: RoomId) -> Result<(), Refusal> {
        self.require_member(room, caller.user).await?;
        if !self.hub.watch_board(caller.id, room) {
            return Err(Refusal::new(
                ErrorCode::BadRequest,
                "Subscribe to the room before opening its whiteboard.",
            ));
        }
        let (segments, upto) = match self.store.board(room).await {
            Ok(found) => found,
            Err(error) => {
                self.hub.unwatch_board(caller.id, room);
                return Err(error.into());
            }
        };
        let chunks = super::frames_of(&segments, PICTURE_CHUNK);
        let last = chunks.len() - 1;
        for (i, chunk) in chunks.into_iter().enumerate() {
            caller
                .reply(ServerMsg::Board {
                    room,
                    segments: chunk.to_vec(),
                    upto,
                    more: i < last,
                })
                .await;
        }
        Ok(())
    }

    pub(super) fn close_board(&self, caller: &Caller<'_>, room: RoomId) {
        self.hub.unwatch_board(caller.id, room);
    }

    pub(super) async fn draw(
        &self,
        caller: &Caller<'_>,
        room: RoomId,
        stroke: u32,
        color: String,
        width: u16,
        points: Vec<[u16; 2]>,
    ) -> Result<(), Refusal> {
        rules::stroke(
            &color,
            width,
            &points,
            self.limits.board_points_per_batch as usize,
        )?;
        let segment = NewSegment {
            room,
            author: caller.user.clone(),
            stroke,
            color: color.to_ascii_lowercase(),
            width,
            points,
            keep: self.limits.board_max_segments,
        };
        let (seq, _) = board_seq(self.store.write(WriteOp::Draw(segment.clone())).await?);
        let segment = BoardSegment {
            seq,
            author: segment.author,
            stroke: segment.stroke,
            color: segment.color,
            width: segment.width,
            points: segment.points,
        };
        self.publish_board(room, &ServerMsg::Drawn { room, segment });
        Ok(())
    }

    pub(super) async fn undo_stroke(&self, caller: &Caller<'_>, room: RoomId) -> Result<(), Refusal> {
        let outcome = self
            .store
            .write(WriteOp::UndoStroke {
                room,
                author: caller.user.id,
            })
            .await
            .map_err(|error| match error {
                crate::server::store::StoreError::NoSuchMessage => Refusal::new(
                    ErrorCode::NoSuchMessage,
                    "You have nothing on this whiteboard to undo.",
                ),
                other => other.into(),
            })?;
        let (seq, stroke) = board_seq(outcome);
        let msg = ServerMsg::StrokeUndone {
            room,
            seq,
            author: caller.user.id,
            stroke: stroke.unwrap_or_default(),
        };
        self.publish_board(room, &msg);
        Ok(())
    }

    pub(super) async fn clear_board(&self, caller: &Caller<'_>, room: RoomId) -> Result<(), Refusal> {
        let admin = self.is_admin(caller.user).await?;
        let outcome = self
            .store
            .write(WriteOp::ClearBoard {
                room,
                actor: caller.user.id,
                admin,
            })
            .await
            .map_err(|error| match error {
                crate::server::store::StoreError::Forbidden => Refusal::new(
                    ErrorCode::Forbidden,
                    "Only owners and moderators may clear this whiteboard.",
                ),
                other => other.into(),
            })?;
        let (seq, _) = board_seq(outcome);
        let by = caller.user.clone();
        self.publish_board(room, &ServerMsg::BoardCleared { room, seq, by });
        Ok(())
    }

    /// Sends a stored board change to those with the board open, here and on other nodes.
    fn publish_board(&self, room: RoomId, msg: &ServerMsg) {
        self.hub.publish_board(room, msg);
        if let Some(cluster) = &self.cluster {
            cluster.announce_board(room, msg);
        }
    }
}
