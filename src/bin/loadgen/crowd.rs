//! A crowd of connected clients in rooms, and the per-client task ("pump") that sends what
//! the driver asks, answers pings, and tallies what arrives: latency of benchmark messages,
//! their seqs (for loss and duplicate counts), acks.

use crate::client::{self, bench_sent_us, bench_text, classify, Error, Incoming, Sink, Stream, Target};
use futures::{SinkExt, StreamExt};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

/// Setup steps running at once (connects, joins, subscribes).
const SETUP_CONCURRENCY: usize = 200;
/// Guest sign-ups running at once (each holds an HTTP connection).
const SIGN_UP_CONCURRENCY: usize = 16;

/// One connected client and where it sits.
pub struct Member {
    pub index: usize,
    pub token: Option<String>,
    pub room: i64,
    pub sink: Sink,
    pub stream: Stream,
    pub arrival: client::Arrival,
}

/// Connects `rooms * per_room` clients; the first of each room creates it, the others join;
/// with `subscribe`, everyone then receives the room live.
pub async fn populate(
    target: &Target,
    rooms: usize,
    per_room: usize,
    subscribe: bool,
) -> Result<Vec<Member>, Error> {
    // Names unique to this call: a server may outlive one generator, and one generator may
    // populate a server more than once.
    static CALLS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let run = format!("{:x}x{call}", std::process::id());
    let total = rooms * per_room;
    let started = Instant::now();
    // Sign-ups first, over a few pooled HTTP connections that close before the WebSockets
    // open: both processes may hold only ~20,000 descriptors here.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(SIGN_UP_CONCURRENCY)
        .build()?;
    let tokens: Vec<Option<String>> = futures::stream::iter(0..total)
        .map(|index| {
            let (target, http, name) = (target.clone(), http.clone(), format!("lg{run}n{index}"));
            async move { client::sign_up(&target, &http, &name).await }
        })
        .buffered(SIGN_UP_CONCURRENCY)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    drop(http);
    eprintln!(
        "  {total} guests signed up in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let mut members: Vec<Member> = futures::stream::iter(tokens.into_iter().enumerate())
        .map(|(index, token)| {
            let target = target.clone();
            async move {
                let (sink, stream, arrival) = client::connect(&target, index, token.as_deref()).await?;
                Ok::<_, Error>(Member {
                    index,
                    token,
                    room: 0,
                    sink,
                    stream,
                    arrival,
                })
            }
        })
        .buffer_unordered(SETUP_CONCURRENCY)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    members.sort_by_key(|m| m.index);
    eprintln!(
        "  {total} clients signed in and connected in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let mut room_ids = Vec::with_capacity(rooms);
    for r in 0..rooms {
        let creator = &mut members[r * per_room];
        let name = format!("bench-{run}-{r}");
        client::send_json(
            &mut creator.sink,
            &serde_json::json!({"type": "create_room", "name": name}),
        )
        .await?;
        let joined = client::expect(&mut creator.stream, |f| f.kind == "joined").await?;
        room_ids.push(joined.room_id().ok_or("joined without a room id")?);
    }
    for member in members.iter_mut() {
        member.room = room_ids[member.index / per_room];
    }
    futures::stream::iter(members.iter_mut().filter(|m| m.index % per_room != 0))
        .map(|m| {
            let room = m.room;
            step(m, serde_json::json!({"type": "join", "room": room}), "joined")
        })
        .buffer_unordered(SETUP_CONCURRENCY)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;
    if subscribe {
        futures::stream::iter(members.iter_mut())
            .map(|m| {
                let room = m.room;
                step(
                    m,
                    serde_json::json!({"type": "subscribe", "room": room}),
                    "backlog",
                )
            })
            .buffer_unordered(SETUP_CONCURRENCY)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<Vec<_>, _>>()?;
    }
    eprintln!(
        "  {rooms} rooms x {per_room} ready after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(members)
}

/// Sends one request and waits for its answer (the last frame of a backlog).
async fn step(member: &mut Member, request: serde_json::Value, answer: &'static str) -> Result<(), Error> {
    client::send_json(&mut member.sink, &request).await?;
    client::expect(&mut member.stream, |f| {
        f.kind == answer && (answer != "backlog" || f.more != Some(true))
    })
    .await?;
    Ok(())
}

/// State every pump shares with the driver.
pub struct Shared {
    /// Time zero of the run; benchmark messages carry µs since it.
    pub epoch: Instant,
    /// The wall clock at `epoch`, in ns since the Unix epoch (the kernel stamps arrivals so).
    epoch_realtime_ns: u64,
    /// Latencies count only for messages received inside [measure_from, measure_to) µs.
    pub measure_from_us: AtomicU64,
    pub measure_to_us: AtomicU64,
    /// Benchmark messages sent and acked, all clients together.
    pub sent: AtomicU64,
    pub acks: AtomicU64,
    /// Benchmark messages received, all clients together.
    pub received: AtomicU64,
    /// Deliveries owed: each ack adds the members of its room.
    pub owed: AtomicU64,
    pub members_per_room: u64,
    /// Clients whose resume (subscribe after a reconnect) has completed.
    pub resumed: AtomicUsize,
    /// µs since the epoch of the latest completed resume.
    pub last_resumed_us: AtomicU64,
    /// Refusals by error code (a refused resume is retried after the server's wait).
    pub refusals: std::sync::Mutex<std::collections::BTreeMap<String, u64>>,
    pub next_message: AtomicU64,
}

impl Shared {
    pub fn new(members_per_room: usize) -> Arc<Shared> {
        Arc::new(Shared {
            epoch: Instant::now(),
            epoch_realtime_ns: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64),
            // The window opens when the driver says so, after any warm-up.
            measure_from_us: AtomicU64::new(u64::MAX),
            measure_to_us: AtomicU64::new(u64::MAX),
            sent: AtomicU64::new(0),
            acks: AtomicU64::new(0),
            received: AtomicU64::new(0),
            owed: AtomicU64::new(0),
            members_per_room: members_per_room as u64,
            resumed: AtomicUsize::new(0),
            last_resumed_us: AtomicU64::new(0),
            refusals: Default::default(),
            next_message: AtomicU64::new(0),
        })
    }

    pub fn count_refusal(&self, what: String) {
        *self.refusals.lock().unwrap().entry(what).or_default() += 1;
    }

    pub fn now_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }

    /// A kernel arrival stamp in µs since the epoch.
    fn arrival_us(&self, arrival: &client::Arrival) -> Option<u64> {
        Some(arrival.realtime_ns()?.saturating_sub(self.epoch_realtime_ns) / 1000)
    }

    /// Length of the measured window, in seconds.
    pub fn window_s(&self) -> f64 {
        let from = self.measure_from_us.load(Ordering::Relaxed);
        let to = self.measure_to_us.load(Ordering::Relaxed);
        to.saturating_sub(from) as f64 / 1e6
    }

    fn in_window(&self, at_us: u64) -> bool {
        at_us >= self.measure_from_us.load(Ordering::Relaxed)
            && at_us < self.measure_to_us.load(Ordering::Relaxed)
    }

    /// Waits until every send is acked and every owed delivery arrived, or `limit` passes;
    /// true if all arrived. (Deliveries alone are not enough: those of a message whose ack
    /// is still on its way can make up for another message's missing ones.)
    pub async fn drained(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.acks.load(Ordering::Relaxed) >= self.sent.load(Ordering::Relaxed)
                && self.received.load(Ordering::Relaxed) >= self.owed.load(Ordering::Relaxed)
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }
}

/// What one client saw.
#[derive(Default)]
pub struct Tally {
    /// µs from send to the frame's arrival in the client's socket (the kernel's stamp), for
    /// benchmark messages received in the measured window: what the server delivered.
    pub latencies_us: Vec<u32>,
    /// µs from send until the generator read the frame: the above plus the generator's own
    /// delay in reaching this client, which dominates when thousands receive at once.
    pub read_latencies_us: Vec<u32>,
    /// Seqs of every benchmark message received (live or replayed).
    pub seqs: Vec<i64>,
    /// Seqs this client's own messages were acked with.
    pub acked: Vec<i64>,
    /// µs from send to ack, inside the measured window.
    pub ack_latencies_us: Vec<u32>,
    /// Newest seq seen (any message), for resuming.
    pub last_seq: i64,
}

/// How a pump starts and sends.
#[derive(Clone, Copy)]
pub struct PumpMode {
    /// Subscribe first with this `after_seq` (a resume after reconnecting).
    pub resume_after: Option<i64>,
    /// Send the next message as soon as the previous one is acked (persist scenario).
    pub closed_loop: bool,
}

/// Runs one client until `stop`: sends a message per `send` signal (or in a closed loop),
/// answers pings, tallies what arrives. Returns the client (to drop or reuse) and its tally.
pub async fn pump(
    mut member: Member,
    mut tally: Tally,
    mut send: mpsc::Receiver<()>,
    mode: PumpMode,
    shared: Arc<Shared>,
    stop: CancellationToken,
) -> (Member, Tally) {
    let room = member.room;
    let mut in_flight: std::collections::VecDeque<u64> = Default::default();
    // The send time is stamped as the frame is written, after any wait in the generator.
    let next_send = |in_flight: &mut std::collections::VecDeque<u64>| {
        let sent_us = shared.now_us();
        in_flight.push_back(sent_us);
        shared.sent.fetch_add(1, Ordering::Relaxed);
        let id = shared.next_message.fetch_add(1, Ordering::Relaxed);
        let frame = serde_json::json!({
            "type": "send", "room": room, "client_msg_id": format!("lg{id}"), "text": bench_text(sent_us),
        });
        Message::Text(frame.to_string().into())
    };
    let resubscribe = mode.resume_after.map(|after_seq| {
        let subscribe = serde_json::json!({"type": "subscribe", "room": room, "after_seq": after_seq});
        Message::Text(subscribe.to_string().into())
    });
    let mut resume_pending = resubscribe.is_some();
    if let Some(subscribe) = &resubscribe {
        if member.sink.send(subscribe.clone()).await.is_err() {
            return (member, tally);
        }
    }
    if mode.closed_loop && member.sink.send(next_send(&mut in_flight)).await.is_err() {
        return (member, tally);
    }
    let members = shared.members_per_room;
    let arrival = member.arrival.clone();
    let record = |tally: &mut Tally, seq: i64, text: &str, live: bool| {
        tally.last_seq = tally.last_seq.max(seq);
        if let Some(sent_us) = bench_sent_us(text) {
            tally.seqs.push(seq);
            shared.received.fetch_add(1, Ordering::Relaxed);
            let now = shared.now_us();
            if live && shared.in_window(now) {
                let arrived = shared.arrival_us(&arrival).unwrap_or(now).min(now);
                tally.latencies_us.push(arrived.saturating_sub(sent_us) as u32);
                tally.read_latencies_us.push(now.saturating_sub(sent_us) as u32);
            }
        }
    };
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            Some(()) = send.recv() => {
                if member.sink.send(next_send(&mut in_flight)).await.is_err() {
                    break;
                }
            }
            frame = member.stream.next() => {
                let Some(Ok(Message::Text(text))) = frame else {
                    if let Some(Ok(Message::Close(close))) = &frame {
                        let code = close.as_ref().map_or(1005, |c| u16::from(c.code));
                        shared.count_refusal(format!("close {code}"));
                    }
                    if matches!(frame, Some(Ok(_))) { continue; }
                    if resume_pending {
                        shared.count_refusal("connection ended before the resume finished".into());
                    }
                    break;
                };
                match classify(text.as_str()) {
                    Incoming::Message(message) => record(&mut tally, message.seq, &message.text, true),
                    Incoming::Backlog { messages, done } => {
                        for message in messages {
                            record(&mut tally, message.seq, &message.text, false);
                        }
                        if done && resume_pending {
                            resume_pending = false;
                            shared.resumed.fetch_add(1, Ordering::Relaxed);
                            shared.last_resumed_us.fetch_max(shared.now_us(), Ordering::Relaxed);
                        }
                    }
                    Incoming::Ack { seq, .. } => {
                        tally.acked.push(seq);
                        shared.acks.fetch_add(1, Ordering::Relaxed);
                        shared.owed.fetch_add(members, Ordering::Relaxed);
                        let now = shared.now_us();
                        if let Some(sent_us) = in_flight.pop_front() {
                            if shared.in_window(now) {
                                tally.ack_latencies_us.push(now.saturating_sub(sent_us) as u32);
                            }
                        }
                        if mode.closed_loop
                            && !stop.is_cancelled()
                            && member.sink.send(next_send(&mut in_flight)).await.is_err()
                        {
                            break;
                        }
                    }
                    Incoming::Ping => {
                        let pong = Message::Text(r#"{"type":"pong"}"#.into());
                        if member.sink.send(pong).await.is_err() {
                            break;
                        }
                    }
                    Incoming::Refused { code, retry_after_ms } => {
                        shared.count_refusal(code);
                        // What a real client does with a refused resume: wait as asked, try again.
                        if let (true, Some(subscribe)) = (resume_pending, &resubscribe) {
                            let wait = retry_after_ms.unwrap_or(1000).min(10_000);
                            tokio::time::sleep(Duration::from_millis(wait)).await;
                            if member.sink.send(subscribe.clone()).await.is_err() {
                                break;
                            }
                        }
                    }
                    Incoming::Other => {}
                }
            }
        }
    }
    (member, tally)
}
