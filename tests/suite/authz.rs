//! Authorization on every message: members only, private and direct rooms invisible to
//! others, and roles (owner, moderator, member) for editing, deleting, kicking and banning.

use crate::common::*;
use huddle::protocol::{ClientMsg, ClientMsgId, ErrorCode, MessageKind, Seq, ServerMsg};

/// The next event of `kind` in the room.
async fn event(client: &mut Client, kind: MessageKind) -> huddle::protocol::ChatMessage {
    client
        .next(|m| match m {
            ServerMsg::Message { message } if message.kind == kind => Some(message),
            _ => None,
        })
        .await
}

async fn stored_texts(server: &TestServer) -> i64 {
    server
        .count("SELECT COUNT(*) FROM messages WHERE kind = 'text'")
        .await
}

#[tokio::test]
async fn outsiders_cannot_read_write_or_watch_a_dm() {
    let server = TestServer::start();
    let mut ada = server.client("Ada").await;
    let mut lin = server.client("Lin").await;
    let mut eve = server.client("Eve").await;
    ada.send(ClientMsg::OpenDm { user: lin.me.id }).await;
    let dm = ada
        .next(|m| match m {
            ServerMsg::Joined { room } if room.peer.is_some() => Some(room.id),
            _ => None,
        })
        .await;
    ada.subscribe(dm, None).await;
    ada.say(dm, "d1", "just between us").await;
    let before = stored_texts(&server).await;

    let text = |id: &str| ClientMsg::Send {
        room: dm,
        client_msg_id: ClientMsgId(id.into()),
        text: "let me in".into(),
        attachments: Vec::new(),
    };
    assert_eq!(eve.refusal(text("e1")).await, ErrorCode::NoSuchRoom);
    let history = ClientMsg::History {
        room: dm,
        before_seq: Seq(i64::MAX),
        limit: None,
    };
    assert_eq!(eve.refusal(history).await, ErrorCode::NoSuchRoom);
    let subscribe = ClientMsg::Subscribe {
        room: dm,
        after_seq: None,
    };
    assert_eq!(eve.refusal(subscribe).await, ErrorCode::NoSuchRoom);
    assert_eq!(
        eve.refusal(ClientMsg::Join { room: dm }).await,
        ErrorCode::NoSuchRoom
    );
    let delete = ClientMsg::Delete {
        room: dm,
        seq: Seq(1),
    };
    assert_eq!(eve.refusal(delete).await, ErrorCode::NoSuchRoom);
    assert_eq!(stored_texts(&server).await, before, "nothing stored on refusal");

    // Typing in a room one cannot see reaches nobody: Ada's next event is Lin's message.
    eve.send(ClientMsg::Typing {
        room: dm,
        active: true,
    })
    .await;
    lin.subscribe(dm, None).await;
    lin.say(dm, "l1", "hi Ada").await;
    let next = ada
        .next(|m| match m {
            ServerMsg::Typing { users, .. } if users.iter().any(|u| u.name == "Eve") => Some(None),
            ServerMsg::Message { message } => Some(Some(message.text)),
            _ => None,
        })
        .await;
    assert_eq!(next.as_deref(), Some("hi Ada"));
}

#[tokio::test]
async fn authors_edit_and_delete_their_own_messages_only() {
    let server = TestServer::start();
    let mut ada = server.client("Ada").await;
    let mut lin = server.client("Lin").await;
    let general = ada.room("general");
    ada.subscribe(general, None).await;
    lin.subscribe(general, None).await;
    let seq = ada.say(general, "a1", "helo").await;

    let edit = |text: &str| ClientMsg::Edit {
        room: general,
        seq,
        text: text.into(),
    };
    assert_eq!(lin.refusal(edit("hijacked")).await, ErrorCode::Forbidden);
    assert_eq!(
        lin.refusal(ClientMsg::Delete { room: general, seq }).await,
        ErrorCode::Forbidden
    );

    ada.send(edit("hello")).await;
    let edited = event(&mut lin, MessageKind::Edit).await;
    assert_eq!((edited.target_seq, edited.text.as_str()), (Some(seq), "hello"));

    ada.send(ClientMsg::Delete { room: general, seq }).await;
    let deleted = event(&mut lin, MessageKind::Delete).await;
    assert_eq!(deleted.target_seq, Some(seq));
    assert_eq!(ada.refusal(edit("again")).await, ErrorCode::NoSuchMessage);

    // A late joiner's replay shows the message as deleted, with no text left on the server.
    let mut cy = server.client("Cy").await;
    let (replay, _) = cy.subscribe(general, Some(Seq(0))).await;
    let original = replay.iter().find(|m| m.seq == seq).unwrap();
    assert!(original.deleted && original.text.is_empty(), "{original:?}");
    assert!(replay
        .iter()
        .any(|m| m.kind == MessageKind::Delete && m.target_seq == Some(seq)));
}

#[tokio::test]
async fn moderators_delete_kick_and_ban() {
    let server = TestServer::start();
    let mut owner = server.client("Owner").await;
    let mut member = server.client("Member").await;
    let mut watcher = server.client("Watcher").await;
    let room = owner.create_room("team").await;
    member.join(room).await;
    watcher.join(room).await;
    owner.subscribe(room, None).await;
    member.subscribe(room, None).await;
    watcher.subscribe(room, None).await;

    let spam = member.say(room, "m1", "buy now").await;
    owner.send(ClientMsg::Delete { room, seq: spam }).await;
    let deleted = event(&mut watcher, MessageKind::Delete).await;
    assert_eq!(
        (deleted.target_seq, deleted.author.name.as_str()),
        (Some(spam), "Owner")
    );

    // Members cannot remove anyone, nor can anyone remove the owner.
    let kick = |user, ban| ClientMsg::Kick { room, user, ban };
    assert_eq!(
        member.refusal(kick(watcher.me.id, false)).await,
        ErrorCode::Forbidden
    );

    owner.send(kick(member.me.id, false)).await;
    let kicked = event(&mut watcher, MessageKind::Kick).await;
    assert_eq!(kicked.target.as_ref().map(|t| t.name.as_str()), Some("Member"));
    member
        .next(|m| matches!(m, ServerMsg::Left { room: r } if r == room).then_some(()))
        .await;
    let text = ClientMsg::Send {
        room,
        client_msg_id: ClientMsgId("m2".into()),
        text: "I'm back?".into(),
        attachments: Vec::new(),
    };
    assert_eq!(member.refusal(text).await, ErrorCode::NotMember);

    // A kick can be undone by joining again; a ban cannot.
    member.join(room).await;
    owner.send(kick(member.me.id, true)).await;
    event(&mut watcher, MessageKind::Ban).await;
    assert_eq!(member.refusal(ClientMsg::Join { room }).await, ErrorCode::Banned);
    assert_eq!(
        server.count("SELECT COUNT(*) FROM memberships m JOIN users u ON u.id = m.user_id WHERE u.name = 'Member' AND m.room_id > 1").await,
        0
    );
}

#[tokio::test]
async fn configured_admins_moderate_everywhere_once_registered() {
    let server = TestServer::start_with(&[("HUDDLE_ADMINS", "Root, Admin")]);
    // A guest holding an admin's name (before the admin registered) gets no powers.
    let mut squatter = server.client("Root").await;
    let mut user = server.client("User").await;
    let general = user.room("general");
    user.subscribe(general, None).await;
    let seq = user.say(general, "u1", "hello").await;
    assert_eq!(
        squatter.refusal(ClientMsg::Delete { room: general, seq }).await,
        ErrorCode::Forbidden
    );

    // A registered admin deletes in general, which nobody owns.
    let cookie = server.register("Admin", "admin password").await;
    let mut admin = server.connect_as(&cookie).await;
    admin.subscribe(general, None).await;
    admin.send(ClientMsg::Delete { room: general, seq }).await;
    let deleted = event(&mut user, MessageKind::Delete).await;
    assert_eq!(deleted.author.name, "Admin");
}

#[tokio::test]
async fn private_rooms_are_invisible_until_the_owner_invites() {
    let server = TestServer::start();
    let mut ada = server.client("Ada").await;
    let mut lin = server.client("Lin").await;
    let mut eve = server.client("Eve").await;
    let room = ada.create_private_room("secret").await;
    ada.subscribe(room, None).await;
    ada.say(room, "s1", "the plan").await;

    // Not in the directory; joining, reading and writing look like a missing room.
    eve.send(ClientMsg::ListRooms {}).await;
    let listed = eve
        .next(|m| match m {
            ServerMsg::RoomDirectory { rooms } => Some(rooms),
            _ => None,
        })
        .await;
    assert!(listed.iter().all(|r| r.name != "secret"));
    assert_eq!(eve.refusal(ClientMsg::Join { room }).await, ErrorCode::NoSuchRoom);
    let subscribe = ClientMsg::Subscribe {
        room,
        after_seq: None,
    };
    assert_eq!(eve.refusal(subscribe).await, ErrorCode::NoSuchRoom);
    let before = stored_texts(&server).await;
    let send = ClientMsg::Send {
        room,
        client_msg_id: ClientMsgId("e1".into()),
        text: "hi".into(),
        attachments: Vec::new(),
    };
    assert_eq!(eve.refusal(send).await, ErrorCode::NoSuchRoom);
    assert_eq!(stored_texts(&server).await, before);

    // The owner invites Lin, who then reads the room; Lin (a member) cannot invite Eve.
    ada.send(ClientMsg::Invite {
        room,
        user: lin.me.id,
    })
    .await;
    lin.next(|m| matches!(m, ServerMsg::Joined { room: r } if r.id == room).then_some(()))
        .await;
    let (replay, _) = lin.subscribe(room, None).await;
    assert!(replay.iter().any(|m| m.text == "the plan"));
    let invite = ClientMsg::Invite {
        room,
        user: eve.me.id,
    };
    assert_eq!(lin.refusal(invite).await, ErrorCode::Forbidden);
    assert_eq!(eve.refusal(ClientMsg::Join { room }).await, ErrorCode::NoSuchRoom);
}

#[tokio::test]
async fn the_owner_appoints_moderators() {
    let server = TestServer::start();
    let mut owner = server.client("Owner").await;
    let mut helper = server.client("Helper").await;
    let mut member = server.client("Member").await;
    let room = owner.create_room("club").await;
    helper.join(room).await;
    member.join(room).await;
    helper.subscribe(room, None).await;
    member.subscribe(room, None).await;
    let seq = member.say(room, "m1", "off topic").await;
    let delete = ClientMsg::Delete { room, seq };
    assert_eq!(helper.refusal(delete.clone()).await, ErrorCode::Forbidden);

    // Members cannot hand out roles; the owner can, and the new moderator hears of it.
    let promote = |user| ClientMsg::SetRole {
        room,
        user,
        role: huddle::protocol::Role::Moderator,
    };
    assert_eq!(member.refusal(promote(member.me.id)).await, ErrorCode::Forbidden);
    owner.send(promote(helper.me.id)).await;
    let role = helper
        .next(|m| match m {
            ServerMsg::Joined { room: info } if info.id == room => Some(info.role),
            _ => None,
        })
        .await;
    assert_eq!(role, huddle::protocol::Role::Moderator);
    helper.send(delete).await;
    let deleted = event(&mut member, MessageKind::Delete).await;
    assert_eq!(deleted.author.name, "Helper");
}
