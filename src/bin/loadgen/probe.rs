//! Reads CPU time and memory of a process (the server's, or the generator's own) from /proc,
//! and raises the generator's open-file limit.

use std::time::Instant;

/// CPU time and RSS of one process at one moment.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    at: Instant,
    /// utime + stime, in clock ticks.
    cpu_ticks: u64,
    pub rss_kib: u64,
}

/// Clock ticks per second for /proc/<pid>/stat (100 on Linux everywhere that matters).
const TICKS_PER_S: f64 = 100.0;

pub fn sample(pid: u32) -> std::io::Result<Sample> {
    let path = if pid == 0 {
        "/proc/self".to_owned()
    } else {
        format!("/proc/{pid}")
    };
    let stat = std::fs::read_to_string(format!("{path}/stat"))?;
    // Fields after the command name (which may contain spaces) start at state = field 3.
    let after_name = &stat[stat.rfind(')').map_or(0, |i| i + 2)..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after the name.
    let cpu_ticks = ticks(11) + ticks(12);
    let status = std::fs::read_to_string(format!("{path}/status"))?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    Ok(Sample {
        at: Instant::now(),
        cpu_ticks,
        rss_kib,
    })
}

/// CPU use between two samples, in percent of one core.
pub fn cpu_percent(from: Sample, to: Sample) -> f64 {
    let wall = to.at.duration_since(from.at).as_secs_f64();
    if wall <= 0.0 {
        return 0.0;
    }
    (to.cpu_ticks.saturating_sub(from.cpu_ticks)) as f64 / TICKS_PER_S / wall * 100.0
}

/// Raises the soft open-file limit to the hard one; returns the new soft limit.
pub fn raise_nofile() -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) => {
            if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
                hard
            } else {
                soft
            }
        }
        Err(_) => 0,
    }
}
