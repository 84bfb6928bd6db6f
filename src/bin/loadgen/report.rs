//! Results: one JSON object per scenario run, and the table that compares Huddle with the
//! baseline from the same suite.

use crate::client::Target;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Above this share of one core, or with more than 1 % late send ticks, the generator (not
/// the server) may be what limited the run; such runs are labelled.
const GENERATOR_CPU_LIMIT: f64 = 90.0;

#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct Latency {
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    /// Percentiles from an HDR histogram of µs samples.
    pub fn from_samples(samples: impl Iterator<Item = u32>) -> Latency {
        // 1 µs to 10 minutes; an auto-resizing histogram misreports quantiles here.
        let mut histogram =
            hdrhistogram::Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).expect("valid bounds");
        for us in samples {
            histogram.saturating_record(u64::from(us));
        }
        let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
        Latency {
            count: histogram.len(),
            p50_ms: ms(0.50),
            p90_ms: ms(0.90),
            p99_ms: ms(0.99),
            max_ms: histogram.max() as f64 / 1000.0,
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct Report {
    pub scenario: String,
    /// `huddle` or `baseline`.
    pub server: String,
    /// The scenario's parameters in words, e.g. "10 x 100 @ 450 msg/s".
    pub case: String,
    /// A non-default server configuration, e.g. "synchronous = normal".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// The suite's round (`BENCH_ROUNDS`): runs of one round ran back to back.
    #[serde(default)]
    pub round: u32,
    pub connections: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offered_msgs_per_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deliveries_per_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acked_per_s: Option<f64>,
    /// Fan-out: send to arrival in the recipient's socket; persist: send to ack read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency: Option<Latency>,
    /// Fan-out: send until the generator read the delivery (includes its own delay).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_latency: Option<Latency>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lost: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duplicated: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_cpu_pct: Option<f64>,
    /// The server's CPU by thread name (e.g. the tokio workers, SQLite's writer thread).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_threads_pct: Option<BTreeMap<String, f64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_rss_kib: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rss_per_conn_kib: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resumed: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resume_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivered_pct: Option<f64>,
    pub generator_cpu_pct: f64,
    pub late_ticks: u64,
    pub ticks: u64,
    /// The generator may have been the limit (CPU or late ticks).
    pub generator_bound: bool,
    #[serde(default)]
    pub notes: Vec<String>,
}

impl Report {
    pub fn new(scenario: &str, target: &Target, case: String) -> Report {
        Report {
            scenario: scenario.to_owned(),
            server: if target.huddle { "huddle" } else { "baseline" }.to_owned(),
            case,
            ..Report::default()
        }
    }

    pub fn set_generator(&mut self, cpu_pct: f64, late_ticks: u64, ticks: u64) {
        self.generator_cpu_pct = cpu_pct;
        self.late_ticks = late_ticks;
        self.ticks = ticks;
        self.generator_bound = cpu_pct > GENERATOR_CPU_LIMIT || late_ticks * 100 > ticks.max(1);
    }

    /// One line for the terminal.
    pub fn summary(&self) -> String {
        let mut parts = vec![format!(
            "{} {} [{}]",
            self.server,
            self.scenario,
            self.case_label()
        )];
        if let Some(v) = self.rss_per_conn_kib {
            parts.push(format!("{v:.1} KiB/conn"));
        }
        if let Some(v) = self.deliveries_per_s {
            parts.push(format!("{v:.0} deliveries/s"));
        }
        if let Some(v) = self.acked_per_s {
            parts.push(format!("{v:.0} acked/s"));
        }
        if let Some(l) = &self.latency {
            parts.push(format!(
                "p50 {:.2} p90 {:.2} p99 {:.2} max {:.2} ms",
                l.p50_ms, l.p90_ms, l.p99_ms, l.max_ms
            ));
        }
        if let Some(l) = &self.read_latency {
            parts.push(format!("read by generator p99 {:.2} ms", l.p99_ms));
        }
        if let (Some(r), Some(s)) = (self.resumed, self.resume_s) {
            parts.push(format!("{r} resumed in {s:.1} s"));
        }
        if let (Some(lost), Some(dup)) = (self.lost, self.duplicated) {
            parts.push(format!("lost {lost} dup {dup}"));
        }
        if let Some(v) = self.server_cpu_pct {
            parts.push(format!("server CPU {v:.0} %{}", self.thread_shares()));
        }
        parts.push(format!("generator CPU {:.0} %", self.generator_cpu_pct));
        if self.generator_bound {
            parts.push("GENERATOR-BOUND".into());
        }
        parts.join(" | ")
    }
}

impl Report {
    /// The case, with the server's variant when it has one.
    fn case_label(&self) -> String {
        match &self.variant {
            Some(variant) => format!("{}, {variant}", self.case),
            None => self.case.clone(),
        }
    }

    /// " (name 12.3, other 4.5)": the server's CPU by thread, or nothing when one thread
    /// name had it all.
    fn thread_shares(&self) -> String {
        match &self.server_threads_pct {
            Some(threads) if threads.len() > 1 => {
                let shares: Vec<String> = threads
                    .iter()
                    .map(|(name, pct)| format!("{name} {pct:.1}"))
                    .collect();
                format!(" ({})", shares.join(", "))
            }
            _ => String::new(),
        }
    }
}

/// A Markdown table: each Huddle case (every variant) beside the baseline runs of the same
/// case, with ratios. A suite run in several rounds shows each side's median, and as the
/// ratio the median of each round's own ratio (a round's runs are back to back, so they
/// share the machine's mood), followed by the rounds' ratios.
pub fn table(reports: &[Report]) -> String {
    let mut out = String::from(
        "| scenario | case | metric | Huddle | baseline | Huddle / baseline |\n|---|---|---|---|---|---|\n",
    );
    let mut cases: Vec<(&str, &str, Option<&str>)> = Vec::new();
    for r in reports.iter().filter(|r| r.server == "huddle") {
        let case = (r.scenario.as_str(), r.case.as_str(), r.variant.as_deref());
        if !cases.contains(&case) {
            cases.push(case);
        }
    }
    let mut most_rounds = 1;
    for (scenario, case, variant) in cases {
        let ours: Vec<&Report> = reports
            .iter()
            .filter(|r| r.server == "huddle" && r.scenario == scenario && r.case == case)
            .filter(|r| r.variant.as_deref() == variant)
            .collect();
        let theirs: Vec<&Report> = reports
            .iter()
            .filter(|r| r.server == "baseline" && r.scenario == scenario && r.case == case)
            .collect();
        most_rounds = most_rounds.max(ours.len());
        let bound = ours.iter().filter(|r| r.generator_bound).count();
        let bound_label = match bound {
            0 => String::new(),
            n if n == ours.len() => " (generator-bound)".into(),
            n => format!(" (generator-bound in {n} of {})", ours.len()),
        };
        let label = ours[0].case_label();
        let mut row = |metric: &str, pick: &dyn Fn(&Report) -> Option<f64>, digits: usize| {
            let Some(our_median) = median(&ours.iter().filter_map(|r| pick(r)).collect::<Vec<_>>()) else {
                return;
            };
            let their_median = median(&theirs.iter().filter_map(|r| pick(r)).collect::<Vec<_>>());
            let fmt = |v: f64| format!("{v:.digits$}");
            let round_ratios: Vec<f64> = ours
                .iter()
                .filter_map(|r| {
                    let baseline = theirs.iter().find(|b| b.round == r.round)?;
                    Some((pick(r)?, pick(baseline)?))
                })
                .filter(|&(_, t)| t > 0.0)
                .map(|(o, t)| o / t)
                .collect();
            let ratio = match (median(&round_ratios), their_median) {
                (Some(m), _) if round_ratios.len() > 1 => {
                    let each: Vec<String> = round_ratios.iter().map(|r| format!("{r:.2}")).collect();
                    format!("{m:.2} ({})", each.join(" / "))
                }
                (Some(m), _) => format!("{m:.2}"),
                (None, Some(t)) if t > 0.0 => format!("{:.2}", our_median / t),
                _ => "–".into(),
            };
            out.push_str(&format!(
                "| {scenario} | {label} | {metric} | {}{bound_label} | {} | {ratio} |\n",
                fmt(our_median),
                their_median.map(fmt).unwrap_or_else(|| "–".into()),
            ));
        };
        row("RSS per connection (KiB)", &|r| r.rss_per_conn_kib, 1);
        row("server CPU (% of a core)", &|r| r.server_cpu_pct, 0);
        row(
            "of which tokio workers (%)",
            &|r| r.server_threads_pct.as_ref()?.get("tokio-rt-worker").copied(),
            0,
        );
        row("deliveries/s", &|r| r.deliveries_per_s, 0);
        row("acked messages/s", &|r| r.acked_per_s, 0);
        row("p50 (ms)", &|r| r.latency.as_ref().map(|l| l.p50_ms), 2);
        row("p99 (ms)", &|r| r.latency.as_ref().map(|l| l.p99_ms), 2);
        row("max (ms)", &|r| r.latency.as_ref().map(|l| l.max_ms), 1);
        row(
            "p99 read by generator (ms)",
            &|r| r.read_latency.as_ref().map(|l| l.p99_ms),
            2,
        );
        row("time until all resumed (s)", &|r| r.resume_s, 1);
        row("delivered (%)", &|r| r.delivered_pct, 2);
        row("lost", &|r| r.lost.map(|v| v as f64), 0);
        row("duplicated", &|r| r.duplicated.map(|v| v as f64), 0);
    }
    if most_rounds > 1 {
        out.push_str(&format!(
            "\nMedians of up to {most_rounds} rounds; a ratio is the median of the rounds' own ratios, listed after it.\n"
        ));
    }
    out
}

/// The middle value (the mean of the two middle ones for an even count); None when empty.
fn median(values: &[f64]) -> Option<f64> {
    let mut values = values.to_vec();
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(values[n / 2]),
        _ => Some((values[n / 2 - 1] + values[n / 2]) / 2.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fanout(server: &str, variant: Option<&str>, cpu: f64) -> Report {
        Report {
            scenario: "fanout".into(),
            server: server.into(),
            case: "10 x 100 @ 450 msg/s".into(),
            variant: variant.map(str::to_owned),
            server_cpu_pct: Some(cpu),
            ..Report::default()
        }
    }

    fn in_round(round: u32, report: Report) -> Report {
        Report { round, ..report }
    }

    fn cpu_rows(table: &str) -> Vec<&str> {
        table.lines().filter(|l| l.contains("server CPU")).collect()
    }

    #[test]
    fn a_variant_is_compared_with_the_same_cases_baseline() {
        let reports = [
            fanout("huddle", None, 36.0),
            fanout("baseline", None, 30.0),
            fanout("huddle", Some("synchronous = normal"), 33.0),
        ];
        let table = table(&reports);
        assert_eq!(
            cpu_rows(&table),
            [
                "| fanout | 10 x 100 @ 450 msg/s | server CPU (% of a core) | 36 | 30 | 1.20 |",
                "| fanout | 10 x 100 @ 450 msg/s, synchronous = normal | server CPU (% of a core) | 33 | 30 | 1.10 |",
            ]
        );
    }

    #[test]
    fn rounds_show_medians_and_the_median_of_each_rounds_ratio() {
        // The machine drifts: round 2 is slow for both servers, and round 3's baseline was
        // disturbed. Pairing runs by round keeps round 2's ratio honest (1.25); the median
        // of the rounds' ratios ignores round 3's outlier.
        let mut bound = fanout("huddle", None, 60.0);
        bound.generator_bound = true;
        let reports = [
            in_round(1, fanout("huddle", None, 40.0)),
            in_round(1, fanout("baseline", None, 32.0)),
            in_round(2, bound),
            in_round(2, fanout("baseline", None, 48.0)),
            in_round(3, fanout("huddle", None, 44.0)),
            in_round(3, fanout("baseline", None, 22.0)),
        ];
        let table = table(&reports);
        assert_eq!(
            cpu_rows(&table),
            ["| fanout | 10 x 100 @ 450 msg/s | server CPU (% of a core) | 44 (generator-bound in 1 of 3) | 32 | 1.25 (1.25 / 1.25 / 2.00) |"]
        );
        assert!(table.contains("Medians of up to 3 rounds"), "{table}");
    }

    #[test]
    fn the_median_of_an_even_count_is_the_mean_of_the_middle_two() {
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }
}
