//! The four scenarios: idle memory, fan-out latency and CPU, reconnect storm, persist rate.
//! Each returns a [`Report`]; the generator's own CPU and late ticks are in every one.

use crate::client::{self, Error, Target};
use crate::crowd::{self, Member, PumpMode, Shared, Tally};
use crate::probe::{self, Sample};
use crate::report::{Latency, Report};
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The send driver wakes this often and sends what is due.
const TICK: Duration = Duration::from_millis(5);
/// How long to wait for in-flight deliveries after the last send.
const DRAIN: Duration = Duration::from_secs(15);

type Pumped = JoinHandle<(Member, Tally)>;

fn spawn_pumps(
    members: Vec<Member>,
    senders_per_room: usize,
    per_room: usize,
    mode: PumpMode,
    shared: &Arc<Shared>,
    stop: &CancellationToken,
) -> (Vec<mpsc::Sender<()>>, Vec<Pumped>) {
    let mut senders = Vec::new();
    let mut pumps = Vec::new();
    for member in members {
        let (tx, rx) = mpsc::channel(256);
        if member.index % per_room < senders_per_room {
            senders.push((member.index % per_room, member.index, tx));
        }
        pumps.push(tokio::spawn(crowd::pump(
            member,
            Tally::default(),
            rx,
            mode,
            shared.clone(),
            stop.clone(),
        )));
    }
    // Round-robin over rooms first, so each room's messages are spread evenly in time.
    senders.sort_by_key(|(slot, index, _)| (*slot, *index));
    (senders.into_iter().map(|(_, _, tx)| tx).collect(), pumps)
}

/// Sends `rate` messages per second, spread over `senders`, until `until` fires.
/// Returns (messages sent, late ticks, ticks).
async fn drive(senders: Vec<mpsc::Sender<()>>, rate: f64, until: CancellationToken) -> (u64, u64, u64) {
    let started = tokio::time::Instant::now();
    let mut interval = tokio::time::interval(TICK);
    let (mut sent, mut late, mut ticks) = (0u64, 0u64, 0u64);
    loop {
        let scheduled = tokio::select! {
            _ = until.cancelled() => break,
            at = interval.tick() => at,
        };
        ticks += 1;
        if scheduled.elapsed() > TICK {
            late += 1;
        }
        let due = (started.elapsed().as_secs_f64() * rate) as u64;
        while sent < due && !senders.is_empty() {
            if senders[(sent as usize) % senders.len()].try_send(()).is_err() {
                late += 1;
            }
            sent += 1;
        }
    }
    (sent, late, ticks)
}

/// Samples of the server (if known) and of the generator itself.
struct Probe {
    server_pid: Option<u32>,
    server: Option<Sample>,
    server_threads: Option<probe::ThreadSample>,
    own: Sample,
}

/// What the server and the generator used between `Probe::start` and `Probe::finish`.
struct Usage {
    server_cpu: Option<f64>,
    server_rss: Option<u64>,
    server_threads: Option<BTreeMap<String, f64>>,
    own_cpu: f64,
}

impl Usage {
    /// Puts the server's share in the report (the generator's goes with its tick counts).
    fn fill(self, report: &mut Report) {
        report.server_cpu_pct = self.server_cpu;
        report.server_rss_kib = self.server_rss;
        report.server_threads_pct = self.server_threads;
    }
}

impl Probe {
    fn start(server_pid: Option<u32>) -> Probe {
        Probe {
            server_pid,
            server: server_pid.and_then(|pid| probe::sample(pid).ok()),
            server_threads: server_pid.and_then(|pid| probe::sample_threads(pid).ok()),
            own: probe::sample(0).expect("/proc/self"),
        }
    }

    fn finish(&self) -> Usage {
        let server_now = self.server_pid.and_then(|pid| probe::sample(pid).ok());
        let server_cpu = match (self.server, server_now) {
            (Some(from), Some(to)) => Some(probe::cpu_percent(from, to)),
            _ => None,
        };
        let threads_now = self.server_pid.and_then(|pid| probe::sample_threads(pid).ok());
        let server_threads = match (&self.server_threads, &threads_now, server_cpu) {
            (Some(from), Some(to), Some(total)) => {
                let mut threads = probe::thread_percent(from, to);
                // Threads that ended inside the window (tokio's blocking pool, closed pool
                // connections) count in the process's total but are gone from its list.
                let listed: f64 = threads.values().sum();
                if total - listed >= 1.0 {
                    threads.insert("(ended threads)".into(), total - listed);
                }
                Some(threads)
            }
            _ => None,
        };
        Usage {
            server_cpu,
            server_rss: server_now.map(|s| s.rss_kib),
            server_threads,
            own_cpu: probe::cpu_percent(self.own, probe::sample(0).expect("/proc/self")),
        }
    }
}

/// Loss and duplicates: every acked message must reach every member of its room once.
fn audit(tallies: &[(i64, &Tally)]) -> (u64, u64) {
    let mut acked: BTreeMap<i64, HashSet<i64>> = BTreeMap::new();
    for (room, tally) in tallies {
        acked
            .entry(*room)
            .or_default()
            .extend(tally.acked.iter().copied());
    }
    let (mut lost, mut duplicated) = (0u64, 0u64);
    for (room, tally) in tallies {
        let expected = &acked[room];
        let distinct: HashSet<i64> = tally.seqs.iter().copied().collect();
        duplicated += (tally.seqs.len() - distinct.len()) as u64;
        lost += expected.difference(&distinct).count() as u64;
    }
    (lost, duplicated)
}

async fn collect(pumps: Vec<Pumped>) -> Vec<(Member, Tally)> {
    let mut out = Vec::with_capacity(pumps.len());
    for pump in pumps {
        out.push(pump.await.expect("pump task"));
    }
    out
}

pub struct FanoutParams {
    pub rooms: usize,
    pub members: usize,
    pub senders_per_room: usize,
    pub rate: f64,
    pub warmup: Duration,
    pub duration: Duration,
}

/// R rooms x M members, S senders per room at a total rate; latency per recipient.
pub async fn fanout(target: &Target, server_pid: Option<u32>, p: FanoutParams) -> Result<Report, Error> {
    let members = crowd::populate(target, p.rooms, p.members, true).await?;
    let shared = Shared::new(p.members);
    let stop = CancellationToken::new();
    let mode = PumpMode {
        resume_after: None,
        closed_loop: false,
    };
    let (senders, pumps) = spawn_pumps(members, p.senders_per_room, p.members, mode, &shared, &stop);
    let stop_sending = CancellationToken::new();
    let driver = tokio::spawn(drive(senders, p.rate, stop_sending.clone()));
    tokio::time::sleep(p.warmup).await;
    shared.measure_from_us.store(shared.now_us(), Ordering::Relaxed);
    let probe = Probe::start(server_pid);
    tokio::time::sleep(p.duration).await;
    shared.measure_to_us.store(shared.now_us(), Ordering::Relaxed);
    let usage = probe.finish();
    stop_sending.cancel();
    let (sent, late, ticks) = driver.await?;
    let drained = shared.drained(DRAIN).await;
    stop.cancel();
    let results = collect(pumps).await;
    let tallies: Vec<(i64, &Tally)> = results.iter().map(|(m, t)| (m.room, t)).collect();
    let (lost, duplicated) = audit(&tallies);
    let latency = Latency::from_samples(tallies.iter().flat_map(|(_, t)| t.latencies_us.iter().copied()));
    let read_latency = Latency::from_samples(
        tallies
            .iter()
            .flat_map(|(_, t)| t.read_latencies_us.iter().copied()),
    );
    let mut report = Report::new(
        "fanout",
        target,
        format!("{} x {} @ {} msg/s", p.rooms, p.members, p.rate),
    );
    report.connections = p.rooms * p.members;
    report.offered_msgs_per_s = Some(p.rate);
    report.deliveries_per_s = Some(latency.count as f64 / shared.window_s());
    report.latency = Some(latency);
    report.read_latency = Some(read_latency);
    report.lost = Some(lost);
    report.duplicated = Some(duplicated);
    report.set_generator(usage.own_cpu, late, ticks);
    usage.fill(&mut report);
    report.notes.push(format!("{sent} messages sent"));
    if !drained {
        report
            .notes
            .push("deliveries still missing after the drain wait".into());
    }
    let refusals = shared.refusals.lock().unwrap().clone();
    if !refusals.is_empty() {
        report.notes.push(format!(
            "refusals and closes seen (a refused resume is retried): {refusals:?}"
        ));
    }
    Ok(report)
}

/// RSS per connection after N clients signed in, joined a room and subscribed.
///
/// Measured as a slope: a fifth of the rooms connect first, then the rest, and only the
/// second group's growth counts. The first group pays the one-off costs (caches filling,
/// the allocator's first pages, memory kept after the connection burst's peak), which at
/// 1,000 connections moved the plain before/after figure between 3 and 15 KiB.
pub async fn idle(
    target: &Target,
    server_pid: u32,
    clients: usize,
    per_room: usize,
    hold: Duration,
) -> Result<Report, Error> {
    let rooms = clients.div_ceil(per_room);
    let warm_rooms = (rooms / 5).max(1);
    let start = probe::sample(server_pid)?;
    let mut members = crowd::populate(target, warm_rooms, per_room, true).await?;
    let warm = members.len();
    // The same settling time as before the final sample, so both readings are alike.
    tokio::time::sleep(hold).await;
    let before = probe::sample(server_pid)?;
    if rooms > warm_rooms {
        let mut rest = crowd::populate(target, rooms - warm_rooms, per_room, true).await?;
        for member in &mut rest {
            member.index += warm;
        }
        members.append(&mut rest);
    }
    let connections = members.len();
    let measured = connections - warm;
    let shared = Shared::new(per_room);
    let stop = CancellationToken::new();
    let mode = PumpMode {
        resume_after: None,
        closed_loop: false,
    };
    let (_senders, pumps) = spawn_pumps(members, 0, per_room, mode, &shared, &stop);
    let probe = Probe::start(Some(server_pid));
    tokio::time::sleep(hold).await;
    let usage = probe.finish();
    let after = probe::sample(server_pid)?;
    stop.cancel();
    let results = collect(pumps).await;
    let open = results.len();
    drop(results);
    let mut report = Report::new("idle", target, format!("{connections} connections"));
    report.connections = open;
    report.server_rss_kib = Some(after.rss_kib);
    report.rss_per_conn_kib = Some(if measured > 0 {
        after.anon_kib.saturating_sub(before.anon_kib) as f64 / measured as f64
    } else {
        after.anon_kib.saturating_sub(start.anon_kib) as f64 / connections as f64
    });
    report.set_generator(usage.own_cpu, 0, 1);
    usage.fill(&mut report);
    // Memory is read after the hold, not when the probe ended.
    report.server_rss_kib = Some(after.rss_kib);
    report.notes.push(format!(
        "server anonymous RSS {} KiB at start, {} KiB with {warm} connections, {} KiB with {connections}",
        start.anon_kib, before.anon_kib, after.anon_kib
    ));
    Ok(report)
}

pub struct StormParams {
    pub clients: usize,
    pub per_room: usize,
    pub rate: f64,
    pub warmup: Duration,
}

/// Drops every client but the room creators (who keep sending), reconnects them all at once
/// with resume, and checks every timeline is complete and duplicate-free.
pub async fn storm(target: &Target, server_pid: Option<u32>, p: StormParams) -> Result<Report, Error> {
    let rooms = p.clients.div_ceil(p.per_room);
    let members = crowd::populate(target, rooms, p.per_room, true).await?;
    let shared = Shared::new(p.per_room);
    let stop_senders = CancellationToken::new();
    let stop_dropped = CancellationToken::new();
    let mode = PumpMode {
        resume_after: None,
        closed_loop: false,
    };
    let (creators, others): (Vec<Member>, Vec<Member>) =
        members.into_iter().partition(|m| m.index % p.per_room == 0);
    let (senders, sender_pumps) = spawn_pumps(creators, 1, p.per_room, mode, &shared, &stop_senders);
    let (_, dropped_pumps) = spawn_pumps(others, 0, p.per_room, mode, &shared, &stop_dropped);
    let stop_sending = CancellationToken::new();
    let driver = tokio::spawn(drive(senders, p.rate, stop_sending.clone()));
    tokio::time::sleep(p.warmup).await;

    // Everyone but the senders loses their connection at the same moment.
    stop_dropped.cancel();
    let dropped = collect(dropped_pumps).await;
    let dropped_count = dropped.len();
    let drop_us = shared.now_us();
    let probe = Probe::start(server_pid);
    let resumed_stop = CancellationToken::new();
    let mut resumed_pumps = Vec::with_capacity(dropped_count);
    for (member, tally) in dropped {
        let Member {
            index, token, room, ..
        } = member; // the old socket closes here
        let (target, shared, stop) = (target.clone(), shared.clone(), resumed_stop.clone());
        resumed_pumps.push(tokio::spawn(async move {
            let mode = PumpMode {
                resume_after: Some(tally.last_seq),
                closed_loop: false,
            };
            let mut attempt = 0;
            let (sink, stream, arrival) = loop {
                match client::connect(&target, index, token.as_deref()).await {
                    Ok(socket) => break socket,
                    Err(error) if attempt < 20 => {
                        attempt += 1;
                        let _ = error;
                        tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
                    }
                    Err(error) => panic!("client {index} could not reconnect: {error}"),
                }
            };
            let member = Member {
                index,
                token,
                room,
                sink,
                stream,
                arrival,
            };
            let (_, never) = mpsc::channel(1);
            crowd::pump(member, tally, never, mode, shared, stop).await
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(300);
    while shared.resumed.load(Ordering::Relaxed) < dropped_count && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let resumed = shared.resumed.load(Ordering::Relaxed);
    let resume_s = shared
        .last_resumed_us
        .load(Ordering::Relaxed)
        .saturating_sub(drop_us) as f64
        / 1e6;
    let usage = probe.finish();
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop_sending.cancel();
    let (sent, late, ticks) = driver.await?;
    let drained = shared.drained(DRAIN).await;
    stop_senders.cancel();
    resumed_stop.cancel();
    let mut results = collect(sender_pumps).await;
    results.extend(collect(resumed_pumps).await);
    let tallies: Vec<(i64, &Tally)> = results.iter().map(|(m, t)| (m.room, t)).collect();
    let (lost, duplicated) = audit(&tallies);
    let owed = shared.owed.load(Ordering::Relaxed).max(1);
    let mut report = Report::new(
        "storm",
        target,
        format!("{dropped_count} clients reconnect at once"),
    );
    report.connections = results.len();
    report.resumed = Some(resumed);
    report.resume_s = Some(resume_s);
    report.delivered_pct = Some(100.0 * (owed - lost.min(owed)) as f64 / owed as f64);
    report.lost = Some(lost);
    report.duplicated = Some(duplicated);
    report.set_generator(usage.own_cpu, late, ticks);
    usage.fill(&mut report);
    report
        .notes
        .push(format!("{sent} messages sent while reconnecting"));
    if !drained {
        report
            .notes
            .push("deliveries still missing after the drain wait".into());
    }
    let refusals = shared.refusals.lock().unwrap().clone();
    if !refusals.is_empty() {
        report.notes.push(format!(
            "refusals and closes seen (a refused resume is retried): {refusals:?}"
        ));
    }
    Ok(report)
}

/// Many senders, each sending its next message when the previous one is acked; no
/// subscribers, so this measures the accept-store-ack path alone.
pub async fn persist(
    target: &Target,
    server_pid: Option<u32>,
    senders: usize,
    rooms: usize,
    warmup: Duration,
    duration: Duration,
) -> Result<Report, Error> {
    let per_room = senders.div_ceil(rooms);
    let members = crowd::populate(target, rooms, per_room, false).await?;
    let shared = Shared::new(0);
    let stop = CancellationToken::new();
    let mode = PumpMode {
        resume_after: None,
        closed_loop: true,
    };
    let (_, pumps) = spawn_pumps(members, 0, per_room, mode, &shared, &stop);
    tokio::time::sleep(warmup).await;
    shared.measure_from_us.store(shared.now_us(), Ordering::Relaxed);
    let probe = Probe::start(server_pid);
    tokio::time::sleep(duration).await;
    shared.measure_to_us.store(shared.now_us(), Ordering::Relaxed);
    let usage = probe.finish();
    stop.cancel();
    let results = collect(pumps).await;
    let latency = Latency::from_samples(
        results
            .iter()
            .flat_map(|(_, t)| t.ack_latencies_us.iter().copied()),
    );
    let mut report = Report::new(
        "persist",
        target,
        format!("{} senders in {rooms} rooms", results.len()),
    );
    report.connections = results.len();
    report.acked_per_s = Some(latency.count as f64 / shared.window_s());
    report.latency = Some(latency);
    report.set_generator(usage.own_cpu, 0, 1);
    usage.fill(&mut report);
    Ok(report)
}
