//! The room whiteboard over real sockets: live strokes for members with the board open, the
//! stored picture for late openers, undo and clear, refused strokes, limits and compaction.

use crate::common::*;
use huddle::protocol::{BoardSegment, ClientMsg, ErrorCode, RoomId, ServerMsg};

fn draw(room: RoomId, stroke: u32, points: &[[u16; 2]]) -> ClientMsg {
    ClientMsg::Draw {
        room,
        stroke,
        color: "#2563eb".into(),
        width: 30,
        points: points.to_vec(),
    }
}

impl Client {
    /// Opens the room's whiteboard and collects the whole picture: (segments, upto).
    async fn open_board(&mut self, room: RoomId) -> (Vec<BoardSegment>, i64) {
        self.send(ClientMsg::OpenBoard { room }).await;
        let mut all = Vec::new();
        loop {
            let (segments, upto, more) = self
                .next(|m| match m {
                    ServerMsg::Board {
                        room: r,
                        segments,
                        upto,
                        more,
                    } if r == room => Some((segments, upto, more)),
                    ServerMsg::Error { code, message, .. } => panic!("open_board refused: {code} {message}"),
                    _ => None,
                })
                .await;
            all.extend(segments);
            if !more {
                return (all, upto);
            }
        }
    }

    /// The next whiteboard event (drawn, undone, cleared) or error.
    async fn next_board_event(&mut self) -> ServerMsg {
        self.next(|m| {
            matches!(
                m,
                ServerMsg::Drawn { .. }
                    | ServerMsg::StrokeUndone { .. }
                    | ServerMsg::BoardCleared { .. }
                    | ServerMsg::Error { .. }
            )
            .then_some(m)
        })
        .await
    }

    async fn next_drawn(&mut self) -> BoardSegment {
        match self.next_board_event().await {
            ServerMsg::Drawn { segment, .. } => segment,
            other => panic!("expected drawn, got {other:?}"),
        }
    }
}

fn points_of(segments: &[BoardSegment]) -> Vec<(u32, Vec<[u16; 2]>)> {
    segments.iter().map(|s| (s.stroke, s.points.clone())).collect()
}

#[tokio::test]
async fn strokes_go_live_to_the_room_are_stored_and_undo_and_clear_propagate() {
    let server = TestServer::start();
    let mut ada = server.client("Ada").await;
    let mut lin = server.client("Lin").await;
    let mut cy = server.client("Cy").await;
    let general = ada.room("general");
    let art = ada.create_room("art").await;
    lin.join(art).await;
    for client in [&mut ada, &mut lin] {
        client.subscribe(art, None).await;
        assert_eq!(client.open_board(art).await, (vec![], 0), "a new board is empty");
    }
    cy.subscribe(general, None).await;
    assert_eq!(
        cy.refusal(ClientMsg::OpenBoard { room: art }).await,
        ErrorCode::NotMember
    );

    // Stroke 1 in two batches (the second repeats the first's last point), stroke 2 in one.
    let batches = [
        (1, vec![[100, 100], [200, 150]]),
        (1, vec![[200, 150], [300, 300], [310, 320]]),
        (2, vec![[5000, 5000]]),
    ];
    for (stroke, points) in &batches {
        ada.send(draw(art, *stroke, points)).await;
    }
    let mut seen = Vec::new();
    for _ in &batches {
        let segment = lin.next_drawn().await;
        assert_eq!(
            (
                segment.author.name.as_str(),
                segment.color.as_str(),
                segment.width
            ),
            ("Ada", "#2563eb", 30)
        );
        seen.push(segment);
    }
    assert_eq!(points_of(&seen), batches.to_vec());
    assert!(seen.windows(2).all(|w| w[0].seq < w[1].seq), "seqs ascend");

    // Someone outside the room heard none of it: the next thing Cy gets is the chat line.
    ada.subscribe(general, None).await;
    ada.say(general, "after-drawing", "done drawing").await;
    let first = cy
        .next(|m| match m {
            ServerMsg::Drawn { .. } | ServerMsg::Message { .. } => Some(m),
            _ => None,
        })
        .await;
    assert!(matches!(first, ServerMsg::Message { .. }), "Cy got {first:?}");

    // A late opener gets the same picture, in order.
    let mut bo = server.client("Bo").await;
    bo.join(art).await;
    bo.subscribe(art, None).await;
    let (picture, upto) = bo.open_board(art).await;
    assert_eq!(picture, seen);
    assert_eq!(upto, seen[2].seq);

    // Undo takes back only one's own newest stroke, for everyone.
    assert_eq!(
        lin.refusal(ClientMsg::UndoStroke { room: art }).await,
        ErrorCode::NoSuchMessage
    );
    ada.send(ClientMsg::UndoStroke { room: art }).await;
    for client in [&mut lin, &mut bo] {
        match client.next_board_event().await {
            ServerMsg::StrokeUndone {
                author, stroke, seq, ..
            } => {
                assert_eq!((author, stroke), (ada.me.id, 2));
                assert!(seq > upto);
            }
            other => panic!("expected stroke_undone, got {other:?}"),
        }
    }
    let mut eve = server.client("Eve").await;
    eve.join(art).await;
    eve.subscribe(art, None).await;
    assert_eq!(points_of(&eve.open_board(art).await.0), batches[..2].to_vec());

    // Clearing is for owners and moderators; then the board is empty for everyone.
    assert_eq!(
        lin.refusal(ClientMsg::ClearBoard { room: art }).await,
        ErrorCode::Forbidden
    );
    ada.send(ClientMsg::ClearBoard { room: art }).await;
    for client in [&mut lin, &mut bo, &mut eve] {
        match client.next_board_event().await {
            ServerMsg::BoardCleared { by, .. } => assert_eq!(by.name, "Ada"),
            other => panic!("expected board_cleared, got {other:?}"),
        }
    }
    let (after_clear, _) = eve.open_board(art).await;
    assert!(after_clear.is_empty());

    // After closing the board, Lin gets no strokes; Bo still does.
    lin.send(ClientMsg::CloseBoard { room: art }).await;
    // A round trip on Lin's socket: the close has been handled when the answer comes.
    assert_eq!(
        lin.refusal(ClientMsg::UndoStroke { room: art }).await,
        ErrorCode::NoSuchMessage
    );
    ada.send(draw(art, 3, &[[1, 1]])).await;
    assert_eq!(bo.next_drawn().await.stroke, 3);
    lin.send(ClientMsg::Send {
        room: art,
        client_msg_id: huddle::protocol::ClientMsgId("lin-after".into()),
        text: "still here".into(),
        attachments: Vec::new(),
    })
    .await;
    let first = lin
        .next(|m| match m {
            ServerMsg::Drawn { .. } | ServerMsg::Ack { .. } => Some(m),
            _ => None,
        })
        .await;
    assert!(matches!(first, ServerMsg::Ack { .. }), "Lin got {first:?}");
}

#[tokio::test]
async fn bad_strokes_are_refused_and_nothing_is_stored_or_sent() {
    let server = TestServer::start();
    let mut ada = server.client("Ada").await;
    let mut lin = server.client("Lin").await;
    let general = ada.room("general");
    for client in [&mut ada, &mut lin] {
        client.subscribe(general, None).await;
        client.open_board(general).await;
    }
    let too_many: Vec<[u16; 2]> = (0..129).map(|i| [i, i]).collect();
    let bad = [
        ClientMsg::Draw {
            room: general,
            stroke: 1,
            color: "blue".into(),
            width: 30,
            points: vec![[1, 1]],
        },
        ClientMsg::Draw {
            room: general,
            stroke: 1,
            color: "#12345g".into(),
            width: 30,
            points: vec![[1, 1]],
        },
        ClientMsg::Draw {
            room: general,
            stroke: 1,
            color: "#123456".into(),
            width: 0,
            points: vec![[1, 1]],
        },
        ClientMsg::Draw {
            room: general,
            stroke: 1,
            color: "#123456".into(),
            width: 401,
            points: vec![[1, 1]],
        },
        ClientMsg::Draw {
            room: general,
            stroke: 1,
            color: "#123456".into(),
            width: 30,
            points: vec![],
        },
        ClientMsg::Draw {
            room: general,
            stroke: 1,
            color: "#123456".into(),
            width: 30,
            points: too_many,
        },
        ClientMsg::Draw {
            room: general,
            stroke: 1,
            color: "#123456".into(),
            width: 30,
            points: vec![[10_001, 5]],
        },
    ];
    for msg in bad {
        assert_eq!(ada.refusal(msg.clone()).await, ErrorCode::BadStroke, "{msg:?}");
    }
    // Malformed shapes are bad requests, and the connection stays usable.
    send_text(
        &mut ada.socket,
        r##"{"type":"draw","room":1,"stroke":1,"color":"#123456","width":30,"points":[[1]]}"##,
    )
    .await;
    assert!(matches!(
        ada.next_board_event().await,
        ServerMsg::Error {
            code: ErrorCode::BadRequest,
            ..
        }
    ));
    send_text(
        &mut ada.socket,
        r##"{"type":"draw","room":1,"stroke":-1,"color":"#123456","width":30,"points":[[1,2]]}"##,
    )
    .await;
    assert!(matches!(
        ada.next_board_event().await,
        ServerMsg::Error {
            code: ErrorCode::BadRequest,
            ..
        }
    ));
    assert_eq!(server.count("SELECT COUNT(*) FROM board_segments").await, 0);

    ada.send(draw(general, 9, &[[1, 2]])).await;
    assert_eq!(
        lin.next_drawn().await.stroke,
        9,
        "the first thing Lin sees is the good stroke"
    );
    assert_eq!(server.count("SELECT COUNT(*) FROM board_segments").await, 1);
}

#[tokio::test]
async fn batches_are_rate_limited_and_old_ones_compacted() {
    let server = TestServer::start_with(&[
        ("HUDDLE_BOARD_BATCHES_PER_S", "1"),
        ("HUDDLE_BOARD_MAX_SEGMENTS", "10"),
    ]);
    let mut ada = server.client("Ada").await;
    let general = ada.room("general");
    ada.subscribe(general, None).await;
    ada.open_board(general).await;
    // A burst of two is allowed at one per second; the third is refused with a wait.
    ada.send(draw(general, 1, &[[1, 1]])).await;
    ada.send(draw(general, 1, &[[2, 2]])).await;
    ada.send(draw(general, 1, &[[3, 3]])).await;
    ada.next_drawn().await;
    ada.next_drawn().await;
    match ada.next_board_event().await {
        ServerMsg::Error {
            code: ErrorCode::RateLimited,
            retry_after_ms: Some(ms),
            ..
        } => assert!(ms > 0),
        other => panic!("expected rate_limited, got {other:?}"),
    }
    drop(ada);

    // Compaction: with a bound of 10, only the newest 10 batches stay (a fresh server each
    // second would be slow, so another user with its own bucket fills the board).
    let mut writers = Vec::new();
    for i in 0..6 {
        let mut w = server.client(&format!("Writer{i}")).await;
        w.subscribe(general, None).await;
        w.open_board(general).await;
        for j in 0..2u16 {
            w.send(draw(general, i, &[[i as u16, j]])).await;
            w.next_drawn().await;
        }
        writers.push(w);
    }
    let (picture, upto) = writers[0].open_board(general).await;
    assert_eq!(picture.len(), 10);
    assert_eq!(picture.last().map(|s| s.seq), Some(upto));
    assert_eq!(picture.first().map(|s| s.seq), Some(upto - 9));
}

#[tokio::test]
async fn any_member_clears_where_the_room_allows_it() {
    let server = TestServer::start();
    let mut ada = server.client("Ada").await;
    let mut lin = server.client("Lin").await;
    // A room whose owner opened the board to everyone in it.
    ada.send(ClientMsg::CreateRoom {
        name: "jam".into(),
        topic: String::new(),
        private: false,
        board_open: true,
    })
    .await;
    let jam = ada
        .next(|m| match m {
            ServerMsg::Joined { room } if room.name == "jam" => Some(room),
            _ => None,
        })
        .await;
    assert!(jam.board_open, "the room says so in its info");
    let general = ada.room("general");
    assert!(
        lin.rooms.iter().any(|r| r.id == general && r.board_open),
        "general is everyone's board, as in the seeds' drawing app"
    );
    lin.join(jam.id).await;
    for (room, stroke) in [(jam.id, 1), (general, 2)] {
        for client in [&mut ada, &mut lin] {
            client.subscribe(room, None).await;
            client.open_board(room).await;
        }
        ada.send(draw(room, stroke, &[[10, 10], [20, 20]])).await;
        assert_eq!(lin.next_drawn().await.stroke, stroke);
        assert_eq!(ada.next_drawn().await.stroke, stroke, "the drawer hears it too");
        // Lin is a plain member, not a moderator: still allowed here.
        lin.send(ClientMsg::ClearBoard { room }).await;
        for client in [&mut ada, &mut lin] {
            match client.next_board_event().await {
                ServerMsg::BoardCleared {
                    by, room: cleared, ..
                } => assert_eq!((by.name.as_str(), cleared), ("Lin", room)),
                other => panic!("expected board_cleared, got {other:?}"),
            }
        }
        assert!(lin.open_board(room).await.0.is_empty());
    }
    // Someone outside the open room still may not clear it.
    let mut cy = server.client("Cy").await;
    assert_eq!(
        cy.refusal(ClientMsg::ClearBoard { room: jam.id }).await,
        ErrorCode::NotMember
    );
}
