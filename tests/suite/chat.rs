//! Chat core over real sockets: rooms, delivery, idempotent retries, resume, gaps, history,
//! presence, typing, direct messages and refused input.

use crate::common::*;
use huddle::protocol::{ClientMsg, ClientMsgId, ErrorCode, MessageKind, RoomId, Seq, ServerMsg};

#[tokio::test]
async fn members_of_a_room_chat_and_others_hear_nothing() {
    let server = TestServer::start();
    let mut ada = server.client("Ada").await;
    let mut lin = server.client("Lin").await;
    let mut cy = server.client("Cy").await;
    let general = ada.room("general");
    let alpha = ada.create_room("alpha").await;
    lin.join(alpha).await;
    ada.subscribe(alpha, None).await;
    lin.subscribe(alpha, None).await;
    cy.subscribe(general, None).await;
    ada.subscribe(general, None).await;

    ada.say(alpha, "a1", "hello Lin").await;
    let got = lin.next_message().await;
    assert_eq!(
        (got.text.as_str(), got.author.name.as_str(), got.room),
        ("hello Lin", "Ada", alpha)
    );
    lin.say(alpha, "l1", "hi Ada").await;
    let got = ada.next_message().await;
    assert_eq!((got.text.as_str(), got.author.name.as_str()), ("hi Ada", "Lin"));

    // Cy is only in general: the first message Cy sees is the later one in general.
    ada.say(general, "a2", "for everyone").await;
    let got = cy.next_message().await;
    assert_eq!((got.text.as_str(), got.room), ("for everyone", general));
}

#[tokio::test]
async fn retry_with_same_client_id_stores_and_broadcasts_once() {
    let server = TestServer::start();
    let mut ada = server.client("Ada").await;
    let mut lin = server.client("Lin").await;
    let general = ada.room("general");
    ada.subscribe(general, None).await;
    lin.subscribe(general, None).await;

    let first = ada.say(general, "same-id", "only once").await;
    let again = ada.say(general, "same-id", "only once").await;
    assert_eq!(first, again, "a retry gets the same ack");
    ada.say(general, "next", "after").await;

    assert_eq!(lin.next_message().await.text, "only once");
    assert_eq!(
        lin.next_message().await.text,
        "after",
        "no second broadcast of the retry"
    );
    lin.send(ClientMsg::History {
        room: general,
        before_seq: Seq(i64::MAX),
        limit: Some(100),
    })
    .await;
    let history = lin
        .next(|m| {
            if let ServerMsg::History { messages, .. } = m {
                Some(messages)
            } else {
                None
            }
        })
        .await;
    let copies = history
        .iter()
        .filter(|m| m.client_msg_id == Some(ClientMsgId("same-id".into())))
        .count();
    assert_eq!(copies, 1, "one row");
}

#[tokio::test]
async fn resume_after_disconnect_replays_exactly_what_was_missed() {
    let server = TestServer::start();
    let mut ada = server.client("Ada").await;
    let mut lin = server.client("Lin").await;
    let general = ada.room("general");
    let (seen, _) = lin.subscribe(general, None).await;
    let last_seen = seen.last().unwrap().seq;
    let lin_cookie = lin.cookie.clone();
    drop(lin);

    ada.subscribe(general, None).await;
    let mut sent = Vec::new();
    for i in 0..50 {
        sent.push(ada.say(general, &format!("m{i}"), &format!("message {i}")).await);
    }
    let mut lin = server.connect_as(&lin_cookie).await;
    let (replayed, gap) = lin.subscribe(general, Some(last_seen)).await;
    assert!(!gap);
    let texts: Vec<_> = replayed
        .iter()
        .filter(|m| m.kind == MessageKind::Text)
        .map(|m| m.text.clone())
        .collect();
    assert_eq!(texts, (0..50).map(|i| format!("message {i}")).collect::<Vec<_>>());
    let seqs: Vec<i64> = replayed.iter().map(|m| m.seq.0).collect();
    assert_eq!(
        seqs,
        ((last_seen.0 + 1)..=sent.last().unwrap().0).collect::<Vec<_>>(),
        "contiguous, in order"
    );

    // And live delivery continues after the replay.
    ada.say(general, "live", "live one").await;
    assert_eq!(lin.next_message().await.text, "live one");
}

#[tokio::test]
async fn missing_more_than_the_bound_gives_newest_page_and_gap() {
    let server = TestServer::start_with(&[("HUDDLE_MAX_RESUME", "20")]);
    let mut ada = server.client("Ada").await;
    let general = ada.room("general");
    let (seen, _) = ada.subscribe(general, None).await;
    let last_seen = seen.last().unwrap().seq;
    for i in 0..80 {
        ada.say(general, &format!("m{i}"), "x").await;
    }
    let mut tab = server.connect_as(&ada.cookie).await;
    let (page, gap) = tab.subscribe(general, Some(last_seen)).await;
    assert!(gap, "gap marker");
    assert_eq!(page.len(), 50, "newest page");
    assert_eq!(page.last().unwrap().text, "x");
    assert!(page.first().unwrap().seq.0 > last_seen.0 + 1);
}

#[tokio::test]
async fn history_pages_are_contiguous() {
    let server = TestServer::start();
    let mut ada = server.client("Ada").await;
    let general = ada.room("general");
    let mut last = Seq(0);
    for i in 0..120 {
        last = ada.say(general, &format!("h{i}"), &format!("h{i}")).await;
    }
    let mut before = Seq(last.0 + 1);
    let mut collected = Vec::new();
    loop {
        ada.send(ClientMsg::History {
            room: general,
            before_seq: before,
            limit: Some(50),
        })
        .await;
        let (messages, has_more) = ada
            .next(|m| match m {
                ServerMsg::History {
                    messages, has_more, ..
                } => Some((messages, has_more)),
                _ => None,
            })
            .await;
        assert!(messages.len() <= 50);
        before = messages.first().map(|m| m.seq).unwrap_or(before);
        collected.splice(0..0, messages);
        if !has_more {
            break;
        }
    }
    let seqs: Vec<i64> = collected.iter().map(|m| m.seq.0).collect();
    assert_eq!(seqs, (1..=last.0).collect::<Vec<_>>());
}

#[tokio::test]
async fn typing_is_shown_then_expires() {
    let server = TestServer::start();
    let mut ada = server.client("Ada").await;
    let mut lin = server.client("Lin").await;
    let general = ada.room("general");
    ada.subscribe(general, None).await;
    lin.subscribe(general, None).await;
    ada.send(ClientMsg::Typing {
        room: general,
        active: true,
    })
    .await;
    let typers = lin
        .next(|m| {
            if let ServerMsg::Typing { users, .. } = m {
                Some(users)
            } else {
                None
            }
        })
        .await;
    assert_eq!(
        typers.iter().map(|u| u.name.as_str()).collect::<Vec<_>>(),
        ["Ada"]
    );
    // No refresh: the mark lapses by itself (TYPING_TTL) and Lin is told.
    let typers = lin
        .next(|m| {
            if let ServerMsg::Typing { users, .. } = m {
                Some(users)
            } else {
                None
            }
        })
        .await;
    assert!(typers.is_empty());
}

#[tokio::test]
async fn sending_clears_typing() {
    let server = TestServer::start();
    let mut ada = server.client("Ada").await;
    let mut lin = server.client("Lin").await;
    let general = ada.room("general");
    ada.subscribe(general, None).await;
    lin.subscribe(general, None).await;
    ada.send(ClientMsg::Typing {
        room: general,
        active: true,
    })
    .await;
    lin.next(|m| matches!(m, ServerMsg::Typing { ref users, .. } if users.len() == 1).then_some(()))
        .await;
    ada.say(general, "t1", "done typing").await;
    let typers = lin
        .next(|m| {
            if let ServerMsg::Typing { users, .. } = m {
                Some(users)
            } else {
                None
            }
        })
        .await;
    assert!(typers.is_empty());
}

#[tokio::test]
async fn two_tabs_of_one_user_count_once() {
    let server = TestServer::start();
    let mut ada = server.client("Ada").await;
    let general = ada.room("general");
    ada.subscribe(general, None).await;
    let mut ada2 = server.connect_as(&ada.cookie).await;
    ada2.subscribe(general, None).await;
    let mut lin = server.client("Lin").await;
    lin.send(ClientMsg::Subscribe {
        room: general,
        after_seq: None,
    })
    .await;
    let online = lin
        .next(|m| match m {
            ServerMsg::Presence { online, .. } => Some(online),
            _ => None,
        })
        .await;
    let names: Vec<_> = online.iter().map(|u| u.name.as_str()).collect();
    assert_eq!(names, ["Ada", "Lin"]);
    let health: serde_json::Value = reqwest::get(server.url("/health"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["connections"], 3);
    let mut third = server.connect_raw().await;
    send(
        &mut third,
        &ClientMsg::Hello {
            version: 1,
            token: None,
        },
    )
    .await;
    let welcome_count = match recv(&mut third).await {
        ServerMsg::Welcome { online, .. } => online,
        other => panic!("{other:?}"),
    };
    assert_eq!(welcome_count, 2, "distinct users online");

    // Closing one of Ada's tabs keeps her online; closing both removes her.
    drop(ada2);
    drop(ada);
    let online = lin
        .next(|m| match m {
            ServerMsg::Presence { online, .. } if online.len() == 1 => Some(online),
            _ => None,
        })
        .await;
    assert_eq!(online[0].name, "Lin");
}

#[tokio::test]
async fn direct_messages_are_private_to_the_two() {
    let server = TestServer::start();
    let mut ada = server.client("Ada").await;
    let mut lin = server.client("Lin").await;
    let mut cy = server.client("Cy").await;
    ada.send(ClientMsg::OpenDm { user: lin.me.id }).await;
    let dm = ada
        .next(|m| {
            if let ServerMsg::Joined { room } = m {
                Some(room)
            } else {
                None
            }
        })
        .await;
    assert_eq!(dm.name, "Lin", "a DM is named after the other person");
    let lin_view = lin
        .next(|m| {
            if let ServerMsg::Joined { room } = m {
                Some(room)
            } else {
                None
            }
        })
        .await;
    assert_eq!((lin_view.id, lin_view.name.as_str()), (dm.id, "Ada"));

    ada.subscribe(dm.id, None).await;
    lin.subscribe(dm.id, None).await;
    ada.say(dm.id, "d1", "psst").await;
    assert_eq!(lin.next_message().await.text, "psst");

    assert_eq!(
        cy.refusal(ClientMsg::Subscribe {
            room: dm.id,
            after_seq: None
        })
        .await,
        ErrorCode::NoSuchRoom
    );
    assert_eq!(
        cy.refusal(ClientMsg::History {
            room: dm.id,
            before_seq: Seq(100),
            limit: None
        })
        .await,
        ErrorCode::NoSuchRoom
    );
    assert_eq!(
        cy.refusal(ClientMsg::Join { room: dm.id }).await,
        ErrorCode::NoSuchRoom
    );
    let code = cy
        .refusal(ClientMsg::Send {
            room: dm.id,
            client_msg_id: ClientMsgId("c1".into()),
            text: "let me in".into(),
            attachments: Vec::new(),
        })
        .await;
    assert_eq!(code, ErrorCode::NoSuchRoom);

    // Opening the DM again finds the same room.
    ada.send(ClientMsg::OpenDm { user: lin.me.id }).await;
    let again = ada
        .next(|m| {
            if let ServerMsg::Joined { room } = m {
                Some(room.id)
            } else {
                None
            }
        })
        .await;
    assert_eq!(again, dm.id);
}

#[tokio::test]
async fn invalid_sends_get_their_code_and_store_nothing() {
    let server = TestServer::start_with(&[("HUDDLE_MAX_MESSAGE_CHARS", "100")]);
    let mut ada = server.client("Ada").await;
    let mut lin = server.client("Lin").await;
    let general = ada.room("general");
    let closed = lin.create_room("lins-room").await;
    let cases = [
        (general, "   \n ".to_owned(), ErrorCode::Empty),
        (general, "x".repeat(101), ErrorCode::TooLong),
        (general, "bell\u{7}".to_owned(), ErrorCode::BadCharacters),
        (closed, "not joined".to_owned(), ErrorCode::NotMember),
        (RoomId(9999), "nowhere".to_owned(), ErrorCode::NoSuchRoom),
    ];
    for (i, (room, text, expected)) in cases.into_iter().enumerate() {
        let id = format!("bad{i}");
        ada.send(ClientMsg::Send {
            room,
            client_msg_id: ClientMsgId(id.clone()),
            text,
            attachments: Vec::new(),
        })
        .await;
        let (code, echoed) = ada
            .next(|m| match m {
                ServerMsg::Error {
                    code, client_msg_id, ..
                } => Some((code, client_msg_id)),
                ServerMsg::Ack { .. } => panic!("invalid send was accepted"),
                _ => None,
            })
            .await;
        assert_eq!(code, expected);
        assert_eq!(echoed, Some(ClientMsgId(id)));
    }
    let bad_id = ada
        .refusal(ClientMsg::Send {
            room: general,
            client_msg_id: ClientMsgId("has space".into()),
            text: "hi".into(),
            attachments: Vec::new(),
        })
        .await;
    assert_eq!(bad_id, ErrorCode::BadRequest);

    // Nothing was stored, and the connection still works.
    let seq = ada.say(general, "good", "fine").await;
    let (messages, _) = ada.subscribe(general, None).await;
    assert!(messages
        .iter()
        .all(|m| m.kind != MessageKind::Text || m.text == "fine"));
    assert_eq!(messages.last().unwrap().seq, seq);
}

#[tokio::test]
async fn room_names_are_unique_case_insensitively_and_joins_show_in_timeline() {
    let server = TestServer::start();
    let mut ada = server.client("Ada").await;
    let mut lin = server.client("Lin").await;
    let room = ada.create_room("Rustaceans").await;
    let code = lin
        .refusal(ClientMsg::CreateRoom {
            name: "rustaceans".into(),
            topic: String::new(),
            private: false,
            board_open: false,
        })
        .await;
    assert_eq!(code, ErrorCode::NameTaken);
    let code = lin
        .refusal(ClientMsg::CreateRoom {
            name: "x".into(),
            topic: String::new(),
            private: false,
            board_open: false,
        })
        .await;
    assert_eq!(code, ErrorCode::BadName);

    lin.send(ClientMsg::ListRooms {}).await;
    let directory = lin
        .next(|m| {
            if let ServerMsg::RoomDirectory { rooms } = m {
                Some(rooms)
            } else {
                None
            }
        })
        .await;
    let listed = directory.iter().find(|r| r.id == room).expect("listed");
    assert_eq!((listed.members, listed.joined), (1, false));

    ada.subscribe(room, None).await;
    lin.join(room).await;
    let line = ada.next_message().await;
    assert_eq!((line.kind, line.author.name.as_str()), (MessageKind::Join, "Lin"));
    lin.send(ClientMsg::Leave { room }).await;
    lin.next(|m| matches!(m, ServerMsg::Left { room: r } if r == room).then_some(()))
        .await;
    let line = ada.next_message().await;
    assert_eq!(
        (line.kind, line.author.name.as_str()),
        (MessageKind::Leave, "Lin")
    );
}

#[tokio::test]
async fn unread_counts_follow_read_marks() {
    let server = TestServer::start();
    let mut ada = server.client("Ada").await;
    let lin = server.client("Lin").await;
    let general = ada.room("general");
    for i in 0..3 {
        ada.say(general, &format!("u{i}"), "unread?").await;
    }
    let mut lin2 = server.connect_as(&lin.cookie).await;
    let info = lin2.rooms.iter().find(|r| r.id == general).unwrap().clone();
    assert_eq!(info.unread, 3);
    lin2.send(ClientMsg::Read {
        room: general,
        seq: info.last_seq,
    })
    .await;
    let unread = lin2
        .next(|m| {
            if let ServerMsg::Unread { unread, .. } = m {
                Some(unread)
            } else {
                None
            }
        })
        .await;
    assert_eq!(unread, 0);
}

#[tokio::test]
async fn guest_names_are_checked_and_unique() {
    let server = TestServer::start();
    server.guest("Ada").await;
    let client = reqwest::Client::new();
    for (name, status, code) in [
        ("ada", 409, "name_taken"),
        ("A", 400, "bad_name"),
        ("<b>x</b>", 400, "bad_name"),
        ("zero\u{200B}width", 400, "bad_name"),
    ] {
        let response = client
            .post(server.url("/api/guest"))
            .json(&serde_json::json!({ "name": name }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{name}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["code"], code, "{name}");
        assert!(body["message"].as_str().unwrap().len() > 10);
    }
}

#[tokio::test]
async fn requests_before_signing_in_are_refused() {
    let server = TestServer::start();
    let mut socket = server.connect_raw().await;
    send(&mut socket, &ClientMsg::ListRooms {}).await;
    assert!(matches!(
        recv(&mut socket).await,
        ServerMsg::Error {
            code: ErrorCode::HelloRequired,
            ..
        }
    ));
    send(
        &mut socket,
        &ClientMsg::Hello {
            version: 1,
            token: None,
        },
    )
    .await;
    assert!(matches!(
        recv(&mut socket).await,
        ServerMsg::Welcome { me: None, .. }
    ));
    send(&mut socket, &ClientMsg::ListRooms {}).await;
    assert!(matches!(
        recv(&mut socket).await,
        ServerMsg::Error {
            code: ErrorCode::NotSignedIn,
            ..
        }
    ));
}
