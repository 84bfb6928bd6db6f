//! `huddle-loadgen`: many chat clients on one tokio thread, speaking Huddle's documented
//! protocol to a Huddle server (or to `huddle-baseline`), measuring what the issue's
//! benchmarks ask: idle memory, fan-out latency and CPU, reconnect storms, persist rate.
//! Loopback only: it refuses any other address.

mod client;
mod crowd;
mod probe;
mod report;
mod scenarios;

use clap::{Parser, Subcommand};
use client::Target;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(about = "Load generator for Huddle benchmarks (loopback only)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
struct Common {
    /// Server address (must be loopback).
    #[arg(long)]
    addr: SocketAddr,
    /// The server's process id, for its CPU and memory from /proc.
    #[arg(long)]
    server_pid: Option<u32>,
    /// The server is `huddle-baseline` (no accounts): skip guest sign-up.
    #[arg(long)]
    baseline: bool,
    /// Spread client sockets over 127.0.0.1 ..= 127.0.0.N.
    #[arg(long, default_value_t = 16)]
    source_ips: u8,
    /// Append the report as one JSON line to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// How the server was configured when that differs from the suite's default (e.g.
    /// "synchronous = normal"); the report compares it with the same case's baseline run.
    #[arg(long)]
    variant: Option<String>,
    /// Which round of a repeated suite this run belongs to: the report pairs each Huddle
    /// run with the baseline run of the same round.
    #[arg(long, default_value_t = 1)]
    round: u32,
}

#[derive(Subcommand)]
enum Command {
    /// RSS per connection after hello, join and subscribe.
    Idle {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 19_900)]
        clients: usize,
        #[arg(long, default_value_t = 100)]
        per_room: usize,
        #[arg(long, default_value_t = 5)]
        hold_s: u64,
    },
    /// R rooms x M members; `rate` messages per second in total from S senders per room.
    Fanout {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 10)]
        rooms: usize,
        #[arg(long, default_value_t = 100)]
        members: usize,
        #[arg(long, default_value_t = 1)]
        senders_per_room: usize,
        /// Messages per second, all rooms together.
        #[arg(long, default_value_t = 450.0)]
        rate: f64,
        #[arg(long, default_value_t = 2)]
        warmup_s: u64,
        #[arg(long, default_value_t = 10)]
        duration_s: u64,
    },
    /// Drop every client but one sender per room, reconnect them all at once, resume.
    Storm {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 10_000)]
        clients: usize,
        #[arg(long, default_value_t = 100)]
        per_room: usize,
        #[arg(long, default_value_t = 100.0)]
        rate: f64,
        #[arg(long, default_value_t = 2)]
        warmup_s: u64,
    },
    /// Acked messages per second from many closed-loop senders.
    Persist {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 200)]
        senders: usize,
        #[arg(long, default_value_t = 10)]
        rooms: usize,
        #[arg(long, default_value_t = 1)]
        warmup_s: u64,
        #[arg(long, default_value_t = 10)]
        duration_s: u64,
    },
    /// Print the Huddle / baseline table from JSON report files.
    Report { files: Vec<PathBuf> },
}

fn target(common: &Common) -> Result<Target, client::Error> {
    if !common.addr.ip().is_loopback() {
        return Err(format!(
            "{} is not a loopback address; the load generator only targets this machine",
            common.addr
        )
        .into());
    }
    Ok(Target {
        addr: common.addr,
        huddle: !common.baseline,
        source_ips: common.source_ips.max(1),
    })
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    if let Err(error) = run(Cli::parse()).await {
        eprintln!("huddle-loadgen: {error}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> Result<(), client::Error> {
    let limit = huddle::server::raise_open_file_limit_to_hard();
    let secs = Duration::from_secs;
    let (common, report) = match cli.command {
        Command::Report { files } => {
            let mut reports = Vec::new();
            for file in files {
                for line in std::fs::read_to_string(&file)?
                    .lines()
                    .filter(|l| !l.trim().is_empty())
                {
                    reports.push(serde_json::from_str(line)?);
                }
            }
            print!("{}", report::table(&reports));
            return Ok(());
        }
        Command::Idle {
            common,
            clients,
            per_room,
            hold_s,
        } => {
            let pid = common
                .server_pid
                .ok_or("idle needs --server-pid to read the server's memory")?;
            if clients as u64 + 64 > limit {
                eprintln!(
                    "warning: {clients} clients but the open-file limit is {limit}; run several generators"
                );
            }
            let report = scenarios::idle(&target(&common)?, pid, clients, per_room, secs(hold_s)).await?;
            (common, report)
        }
        Command::Fanout {
            common,
            rooms,
            members,
            senders_per_room,
            rate,
            warmup_s,
            duration_s,
        } => {
            let params = scenarios::FanoutParams {
                rooms,
                members,
                senders_per_room,
                rate,
                warmup: secs(warmup_s),
                duration: secs(duration_s),
            };
            let report = scenarios::fanout(&target(&common)?, common.server_pid, params).await?;
            (common, report)
        }
        Command::Storm {
            common,
            clients,
            per_room,
            rate,
            warmup_s,
        } => {
            if common.baseline {
                return Err("the baseline cannot resume; storm runs against Huddle only".into());
            }
            let params = scenarios::StormParams {
                clients,
                per_room,
                rate,
                warmup: secs(warmup_s),
            };
            let report = scenarios::storm(&target(&common)?, common.server_pid, params).await?;
            (common, report)
        }
        Command::Persist {
            common,
            senders,
            rooms,
            warmup_s,
            duration_s,
        } => {
            let report = scenarios::persist(
                &target(&common)?,
                common.server_pid,
                senders,
                rooms,
                secs(warmup_s),
                secs(duration_s),
            )
            .await?;
            (common, report)
        }
    };
    let report = report::Report {
        variant: common.variant.clone(),
        round: common.round,
        ..report
    };
    println!("{}", report.summary());
    if let Some(path) = &common.json {
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
        writeln!(file, "{}", serde_json::to_string(&report)?)?;
    }
    Ok(())
}
