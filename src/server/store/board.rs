//! Whiteboard writes (a stroke batch, undo, clear) run by the single writer, and the read of a
//! room's picture. Every change takes the room's next `board_seq`.

use super::writer::{member_role, require_member, room_kind};
use super::{Backend, StoreError, StoreResult};
use crate::protocol::{BoardSegment, RoomId, RoomKind, UserId, UserRef};
use sqlx::{AnyConnection, AnyPool, Row};

/// A new stroke batch for `room`.
#[derive(Debug, Clone)]
pub struct NewSegment {
    pub room: RoomId,
    pub author: UserRef,
    pub stroke: u32,
    pub color: String,
    pub width: u16,
    pub points: Vec<[u16; 2]>,
    /// Batches the room keeps; older ones are dropped.
    pub keep: u32,
}

async fn next_seq(conn: &mut AnyConnection, room: RoomId) -> StoreResult<i64> {
    let row = sqlx::query("UPDATE rooms SET board_seq = board_seq + 1 WHERE id = $1 RETURNING board_seq")
        .bind(room.0)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or(StoreError::NoSuchRoom)?;
    Ok(row.get(0))
}

/// Stores a batch from a member under the next seq; drops batches older than `keep` seqs.
pub(super) async fn draw(conn: &mut AnyConnection, segment: &NewSegment) -> StoreResult<i64> {
    require_member(conn, segment.room, segment.author.id).await?;
    let seq = next_seq(conn, segment.room).await?;
    let points = serde_json::to_string(&segment.points).expect("points serialize");
    sqlx::query(
        "INSERT INTO board_segments (room_id, seq, author_id, stroke, color, width, points)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(segment.room.0)
    .bind(seq)
    .bind(segment.author.id.0)
    .bind(segment.stroke as i64)
    .bind(&segment.color)
    .bind(segment.width as i64)
    .bind(points)
    .execute(&mut *conn)
    .await?;
    sqlx::query("DELETE FROM board_segments WHERE room_id = $1 AND seq <= $2")
        .bind(segment.room.0)
        .bind(seq - segment.keep as i64)
        .execute(&mut *conn)
        .await?;
    Ok(seq)
}

/// Removes the author's newest stroke (all its batches): `(seq, stroke)`, or `NoSuchMessage`
/// when the author has nothing on the board.
pub(super) async fn undo(conn: &mut AnyConnection, room: RoomId, author: UserId) -> StoreResult<(i64, u32)> {
    require_member(conn, room, author).await?;
    let stroke: i64 = sqlx::query(
        "SELECT stroke FROM board_segments WHERE room_id = $1 AND author_id = $2 ORDER BY seq DESC LIMIT 1",
    )
    .bind(room.0)
    .bind(author.0)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(StoreError::NoSuchMessage)?
    .get(0);
    sqlx::query("DELETE FROM board_segments WHERE room_id = $1 AND author_id = $2 AND stroke = $3")
        .bind(room.0)
        .bind(author.0)
        .bind(stroke)
        .execute(&mut *conn)
        .await?;
    Ok((next_seq(conn, room).await?, stroke as u32))
}

/// Wipes the board. Owners and moderators (and admins) may; any member where the room says
/// so (`board_open`); in a direct room, both people.
pub(super) async fn clear(
    conn: &mut AnyConnection,
    room: RoomId,
    actor: UserId,
    admin: bool,
) -> StoreResult<i64> {
    let open = sqlx::query("SELECT board_open FROM rooms WHERE id = $1")
        .bind(room.0)
        .fetch_optional(&mut *conn)
        .await?
        .is_some_and(|row| row.get::<i64, _>("board_open") != 0);
    let allowed = match room_kind(conn, room).await? {
        RoomKind::Direct => require_member(conn, room, actor).await.is_ok(),
        _ if admin => true,
        _ if open => {
            require_member(conn, room, actor).await?;
            true
        }
        _ => member_role(conn, room, actor).await?.moderates(),
    };
    if !allowed {
        return Err(StoreError::Forbidden);
    }
    sqlx::query("DELETE FROM board_segments WHERE room_id = $1")
        .bind(room.0)
        .execute(&mut *conn)
        .await?;
    next_seq(conn, room).await
}

/// The room's picture in drawing order, and the newest board seq it reflects.
pub(super) async fn picture(
    reads: &AnyPool,
    backend: Backend,
    room: RoomId,
) -> StoreResult<(Vec<BoardSegment>, i64)> {
    // One read transaction on one snapshot, so the picture and `upto` agree.
    let mut tx = reads.begin().await?;
    if backend == Backend::Postgres {
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            .execute(&mut *tx)
            .await?;
    }
    let upto: i64 = sqlx::query("SELECT board_seq FROM rooms WHERE id = $1")
        .bind(room.0)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NoSuchRoom)?
        .get(0);
    let rows = sqlx::query(
        "SELECT b.seq, b.author_id, u.name, b.stroke, b.color, b.width, b.points
         FROM board_segments b JOIN users u ON u.id = b.author_id
         WHERE b.room_id = $1 ORDER BY b.seq",
    )
    .bind(room.0)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let segments = rows
        .iter()
        .map(|row| BoardSegment {
            seq: row.get("seq"),
            author: UserRef {
                id: UserId(row.get("author_id")),
                name: row.get("name"),
            },
            stroke: row.get::<i64, _>("stroke") as u32,
            color: row.get("color"),
            width: row.get::<i64, _>("width") as u16,
            points: serde_json::from_str(row.get("points")).unwrap_or_default(),
        })
        .collect();
    Ok((segments, upto))
}
