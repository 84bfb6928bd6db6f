//! Message search over real sockets: finds word prefixes ranked, filters by room, author and
//! time, shows only rooms the searcher is in, follows edits and deletes, refuses empty or
//! oversize queries, and `around` opens a room at a result with its neighbours.

use crate::common::*;
use huddle::protocol::{ClientMsg, ErrorCode, MessageKind, RoomId, SearchHit, Seq, ServerMsg};

impl Client {
    /// Runs a search and returns its hits and `has_more`.
    async fn search(&mut self, query: ClientMsg) -> (Vec<SearchHit>, bool) {
        self.send(query).await;
        self.next(|m| match m {
            ServerMsg::SearchResults { hits, has_more, .. } => Some((hits, has_more)),
            ServerMsg::Error { code, message, .. } => panic!("search refused: {code} {message}"),
            _ => None,
        })
        .await
    }

    /// The texts found for `text` with no filters.
    async fn find(&mut self, text: &str) -> Vec<String> {
        let (hits, _) = self.search(query(text)).await;
        hits.into_iter().map(|h| h.text).collect()
    }

    /// Waits until the message with `seq` in `room` was changed (edit or delete event).
    async fn changed(&mut self, room: RoomId, seq: Seq) {
        self.next(|m| match m {
            ServerMsg::Message { message }
                if message.room == room
                    && matches!(message.kind, MessageKind::Edit | MessageKind::Delete)
                    && message.target_seq == Some(seq) =>
            {
                Some(())
            }
            _ => None,
        })
        .await
    }
}

fn query(text: &str) -> ClientMsg {
    Q::new(text).msg()
}

/// A search request with optional filters.
#[derive(Default)]
struct Q {
    text: String,
    room: Option<RoomId>,
    author: Option<String>,
    since: Option<i64>,
    until: Option<i64>,
    page: u32,
}

impl Q {
    fn new(text: &str) -> Q {
        Q {
            text: text.into(),
            ..Q::default()
        }
    }

    fn msg(self) -> ClientMsg {
        ClientMsg::Search {
            query: self.text,
            room: self.room,
            author: self.author,
            since: self.since,
            until: self.until,
            page: self.page,
        }
    }
}

#[tokio::test]
async fn search_finds_word_prefixes_with_highlights_and_filters() {
    let server = TestServer::start();
    let mut ada = server.client("Ada").await;
    let mut lin = server.client("Lin").await;
    let general = ada.room("general");
    let ops = ada.create_room("ops").await;
    lin.join(ops).await;
    ada.say(general, "g1", "Deploying the new build tonight").await;
    ada.say(ops, "o1", "deploy failed, rolling back").await;
    lin.say(ops, "o2", "Deployment fixed; café is open").await;
    lin.say(general, "g2", "lunch anyone?").await;

    let (hits, has_more) = ada.search(query("deplo")).await;
    assert!(!has_more);
    let mut texts: Vec<&str> = hits.iter().map(|h| h.text.as_str()).collect();
    texts.sort();
    assert_eq!(
        texts,
        [
            "Deploying the new build tonight",
            "Deployment fixed; café is open",
            "deploy failed, rolling back"
        ]
    );
    let fixed = hits.iter().find(|h| h.text.starts_with("Deployment")).unwrap();
    assert_eq!((fixed.room, fixed.author.name.as_str()), (ops, "Lin"));
    assert_eq!(
        fixed.highlights,
        [[0, 10]],
        "the whole matched word, in characters"
    );

    // Every word must occur; case and accents do not matter.
    assert_eq!(
        ada.find("DEPLOYMENT CAFE").await,
        ["Deployment fixed; café is open"]
    );
    // Filters: room, author (any case), time.
    let (in_ops, _) = ada
        .search(
            Q {
                room: Some(ops),
                ..Q::new("deploy")
            }
            .msg(),
        )
        .await;
    assert_eq!(in_ops.len(), 2);
    assert!(in_ops.iter().all(|h| h.room == ops));
    let (by_lin, _) = ada
        .search(
            Q {
                author: Some("LIN".into()),
                ..Q::new("deploy")
            }
            .msg(),
        )
        .await;
    assert_eq!(
        by_lin.iter().map(|h| h.text.as_str()).collect::<Vec<_>>(),
        ["Deployment fixed; café is open"]
    );
    let (future, _) = ada
        .search(
            Q {
                since: Some(i64::MAX / 2),
                ..Q::new("deploy")
            }
            .msg(),
        )
        .await;
    assert!(future.is_empty());
    let (past, _) = ada
        .search(
            Q {
                until: Some(1),
                ..Q::new("deploy")
            }
            .msg(),
        )
        .await;
    assert!(past.is_empty());

    // Query syntax cannot be injected: operators are just separators.
    assert_eq!(
        ada.find("\"deploy* OR lunch").await.len(),
        0,
        "all words must match"
    );
    assert_eq!(ada.find("lunch)(").await, ["lunch anyone?"]);
    assert_eq!(ada.refusal(query("  ?!  ")).await, ErrorCode::Empty);
    assert_eq!(ada.refusal(query(&"x".repeat(201))).await, ErrorCode::TooLong);
}

#[tokio::test]
async fn search_shows_only_rooms_one_is_in_and_follows_edits_and_deletes() {
    let server = TestServer::start();
    let mut ada = server.client("Ada").await;
    let mut cy = server.client("Cy").await;
    let general = ada.room("general");
    let secret = ada.create_private_room("secret").await;
    ada.say(secret, "s1", "the password is swordfish").await;
    assert_eq!(ada.find("swordfish").await.len(), 1);
    assert!(cy.find("swordfish").await.is_empty(), "not a member: not found");
    assert_eq!(
        cy.refusal(
            Q {
                room: Some(secret),
                ..Q::new("swordfish")
            }
            .msg()
        )
        .await,
        ErrorCode::NoSuchRoom
    );

    ada.subscribe(general, None).await;
    let seq = ada.say(general, "g1", "meeting at noon").await;
    ada.send(ClientMsg::Edit {
        room: general,
        seq,
        text: "meeting at three".into(),
    })
    .await;
    ada.changed(general, seq).await;
    assert!(ada.find("noon").await.is_empty(), "the old text is forgotten");
    assert_eq!(ada.find("three").await, ["meeting at three"]);
    ada.send(ClientMsg::Delete { room: general, seq }).await;
    ada.changed(general, seq).await;
    assert!(
        ada.find("meeting").await.is_empty(),
        "a deleted message is never found"
    );

    // Leaving a room takes its messages out of one's results.
    let mut lin = server.client("Lin").await;
    let side = ada.create_room("side").await;
    lin.join(side).await;
    ada.say(side, "x1", "quarterly numbers").await;
    assert_eq!(lin.find("quarterly").await.len(), 1);
    lin.send(ClientMsg::Leave { room: side }).await;
    lin.next(|m| matches!(m, ServerMsg::Left { room } if room == side).then_some(()))
        .await;
    assert!(lin.find("quarterly").await.is_empty());
}

#[tokio::test]
async fn results_page_and_around_opens_a_room_at_a_result() {
    let server = TestServer::start();
    let mut ada = server.client("Ada").await;
    let general = ada.room("general");
    let mut target = Seq(0);
    for i in 0..70 {
        let text = if i == 35 {
            "the needle".to_owned()
        } else {
            format!("hay number {i}")
        };
        let seq = ada.say(general, &format!("m{i}"), &text).await;
        if i == 35 {
            target = seq;
        }
    }
    let (first, more) = ada.search(query("hay")).await;
    assert_eq!((first.len(), more), (20, true));
    let (last, more) = ada
        .search(
            Q {
                page: 3,
                ..Q::new("hay")
            }
            .msg(),
        )
        .await;
    assert_eq!((last.len(), more), (9, false));
    // The pages together are every hay message once.
    let mut seqs: Vec<Seq> = Vec::new();
    for page in 0..4 {
        seqs.extend(
            ada.search(
                Q {
                    page,
                    ..Q::new("hay")
                }
                .msg(),
            )
            .await
            .0
            .iter()
            .map(|h| h.seq),
        );
    }
    seqs.sort();
    seqs.dedup();
    assert_eq!(seqs.len(), 69, "pages neither overlap nor skip");

    // Best first: the message that is all about kiwis beats a newer one that mentions one.
    let about = ada.say(general, "k1", "kiwi kiwi kiwi").await;
    ada.say(
        general,
        "k2",
        "someone brought a kiwi to the long meeting this afternoon",
    )
    .await;
    let (ranked, _) = ada.search(query("kiwi")).await;
    assert_eq!(ranked.len(), 2);
    assert_eq!(ranked[0].seq, about, "ranked by relevance, not by time");

    let (hits, _) = ada.search(query("needle")).await;
    assert_eq!(hits[0].seq, target);
    ada.send(ClientMsg::Around {
        room: general,
        seq: target,
    })
    .await;
    let (messages, has_older, has_newer) = ada
        .next(|m| match m {
            ServerMsg::Around {
                messages,
                has_older,
                has_newer,
                ..
            } => Some((messages, has_older, has_newer)),
            _ => None,
        })
        .await;
    assert!(messages.iter().any(|m| m.seq == target && m.text == "the needle"));
    assert!(
        messages.windows(2).all(|w| w[1].seq.0 == w[0].seq.0 + 1),
        "one contiguous window"
    );
    let before = messages.iter().filter(|m| m.seq < target).count();
    let after = messages.iter().filter(|m| m.seq > target).count();
    assert!(
        before >= 10 && after >= 10,
        "neighbours on both sides: {before} / {after}"
    );
    assert!(has_older && has_newer);
}
