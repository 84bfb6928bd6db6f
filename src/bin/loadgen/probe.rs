//! Reads CPU time and memory of a process (the server's, or the generator's own) from /proc,
//! also per thread name (which part of the server spent it), and raises the generator's
//! open-file limit.

use std::collections::BTreeMap;
use std::time::Instant;

/// CPU time and RSS of one process at one moment.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    at: Instant,
    /// utime + stime, in clock ticks.
    cpu_ticks: u64,
    pub rss_kib: u64,
    /// The anonymous part of RSS: heap and stacks, without the binary's and libraries' pages,
    /// which come and go as code paths first run (tens of MiB in a debug build).
    pub anon_kib: u64,
}

/// Clock ticks per second for /proc/<pid>/stat (100 on Linux everywhere that matters).
const TICKS_PER_S: f64 = 100.0;

/// The name and CPU ticks (utime + stime) in the text of a /proc `stat` file.
fn parse_stat(stat: &str) -> (&str, u64) {
    let name = stat
        .find('(')
        .zip(stat.rfind(')'))
        .map_or("", |(open, close)| &stat[open + 1..close]);
    // Fields after the command name (which may contain spaces) start at state = field 3.
    let after_name = &stat[stat.rfind(')').map_or(0, |i| i + 2)..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after the name.
    (name, ticks(11) + ticks(12))
}

pub fn sample(pid: u32) -> std::io::Result<Sample> {
    let path = if pid == 0 {
        "/proc/self".to_owned()
    } else {
        format!("/proc/{pid}")
    };
    let stat = std::fs::read_to_string(format!("{path}/stat"))?;
    let (_, cpu_ticks) = parse_stat(&stat);
    let status = std::fs::read_to_string(format!("{path}/status"))?;
    let kib = |field: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    Ok(Sample {
        at: Instant::now(),
        cpu_ticks,
        rss_kib: kib("VmRSS:"),
        anon_kib: kib("RssAnon:"),
    })
}

/// CPU ticks of a process's threads, summed by thread name (tokio's workers share one).
pub struct ThreadSample {
    at: Instant,
    ticks_by_name: BTreeMap<String, u64>,
}

pub fn sample_threads(pid: u32) -> std::io::Result<ThreadSample> {
    let mut ticks_by_name = BTreeMap::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        // A thread that ended since the listing is skipped.
        let Ok(stat) = std::fs::read_to_string(task?.path().join("stat")) else {
            continue;
        };
        let (name, ticks) = parse_stat(&stat);
        *ticks_by_name.entry(name.to_owned()).or_default() += ticks;
    }
    Ok(ThreadSample {
        at: Instant::now(),
        ticks_by_name,
    })
}

/// CPU use per thread name between two samples, in percent of one core; names that used
/// none are left out.
pub fn thread_percent(from: &ThreadSample, to: &ThreadSample) -> BTreeMap<String, f64> {
    let wall = to.at.duration_since(from.at).as_secs_f64();
    to.ticks_by_name
        .iter()
        .map(|(name, &ticks)| {
            let used = ticks.saturating_sub(from.ticks_by_name.get(name).copied().unwrap_or(0));
            (
                name.clone(),
                used as f64 / TICKS_PER_S / wall.max(f64::EPSILON) * 100.0,
            )
        })
        .filter(|(_, pct)| *pct > 0.0)
        .collect()
}

/// CPU use between two samples, in percent of one core.
pub fn cpu_percent(from: Sample, to: Sample) -> f64 {
    let wall = to.at.duration_since(from.at).as_secs_f64();
    if wall <= 0.0 {
        return 0.0;
    }
    (to.cpu_ticks.saturating_sub(from.cpu_ticks)) as f64 / TICKS_PER_S / wall * 100.0
}
