//! Mentions over real sockets: `@name` (spaces included, any case, not in code) counts as an
//! unread mention for that person until they read the room, and lists in `mentions`.

use crate::common::*;
use huddle::protocol::{ClientMsg, RoomInfo, ServerMsg};

fn general(rooms: &[RoomInfo]) -> &RoomInfo {
    rooms.iter().find(|r| r.name == "general").unwrap()
}

#[tokio::test]
async fn mentions_count_until_read_and_are_listed() {
    let server = TestServer::start();
    let mut ada = server.client("Ada").await;
    let lin = server.client("Lin Chen").await;
    let room = ada.room("general");
    ada.say(room, "m1", "@Lin Chen could you look at the deploy?")
        .await;
    ada.say(room, "m2", "the variable is `@Lin Chen` in code, not a mention")
        .await;
    ada.say(room, "m3", "lin chen without an at sign").await;
    ada.say(room, "m4", "ping @lin chen!").await;
    ada.say(room, "m5", "@Lin Chenko is someone else").await;

    let mut lin = server.connect_as(&lin.cookie).await;
    let info = general(&lin.rooms).clone();
    assert_eq!(
        (info.unread, info.mentions),
        (5, 2),
        "two of five unread messages mention Lin"
    );

    lin.send(ClientMsg::Mentions {}).await;
    let hits = lin
        .next(|m| match m {
            ServerMsg::Mentions { hits } => Some(hits),
            _ => None,
        })
        .await;
    let texts: Vec<&str> = hits.iter().map(|h| h.text.as_str()).collect();
    assert_eq!(
        texts,
        ["ping @lin chen!", "@Lin Chen could you look at the deploy?"],
        "newest first"
    );
    assert_eq!(hits[0].highlights, [[5, 14]]);
    assert_eq!(hits[1].author.name, "Ada");

    // Reading the room clears the count; the list stays.
    let head = info.last_seq;
    lin.send(ClientMsg::Read { room, seq: head }).await;
    lin.next(|m| matches!(m, ServerMsg::Unread { unread: 0, .. }).then_some(()))
        .await;
    let lin = server.connect_as(&lin.cookie).await;
    assert_eq!(general(&lin.rooms).mentions, 0);
    let ada_again = server.connect_as(&ada.cookie).await;
    assert_eq!(general(&ada_again.rooms).mentions, 0, "Ada was never mentioned");
}

#[tokio::test]
async fn mentions_in_rooms_one_is_not_in_do_not_count() {
    let server = TestServer::start();
    let mut ada = server.client("Ada").await;
    let cy = server.client("Cy").await;
    let side = ada.create_room("side").await;
    ada.say(side, "s1", "@Cy is not here to read this").await;
    let mut cy = server.connect_as(&cy.cookie).await;
    assert!(cy.rooms.iter().all(|r| r.mentions == 0));
    cy.send(ClientMsg::Mentions {}).await;
    let hits = cy
        .next(|m| match m {
            ServerMsg::Mentions { hits } => Some(hits),
            _ => None,
        })
        .await;
    assert!(hits.is_empty());
}
