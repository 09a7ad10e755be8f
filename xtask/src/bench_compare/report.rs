//! From runs to markdown: medians and spreads, the per-scenario tables, and
//! the list of the targets with what was measured against each.

use std::time::Duration;

use super::measure::Run;

/// Median, min and max of the successful runs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Spread {
    pub median: Duration,
    pub min: Duration,
    pub max: Duration,
}

/// What a job's counted runs add up to.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    pub runs: usize,
    pub ok: usize,
    /// Over successful runs only: a failed run's time means nothing.
    pub wall: Option<Spread>,
    /// Every successful run's wall time, in the order they ran.
    pub walls: Vec<Duration>,
    pub cpu: Option<Duration>,
    pub peak_rss_bytes: Option<u64>,
    pub peak_rss_max_bytes: Option<u64>,
    pub other_cpu: Option<Duration>,
    /// The machine's busy CPU time during a run, median.
    pub machine_cpu: Option<Duration>,
    /// Distinct failure reasons, in order of appearance.
    pub failures: Vec<String>,
    pub last_byte_to_verified: Option<Duration>,
    pub last_byte_to_verified_seen: Option<Duration>,
    pub retries: Option<u64>,
    /// Body bytes the server counted per successful run: median and max.
    pub served_bytes: Option<u64>,
    pub served_bytes_max: Option<u64>,
    /// Requests the server counted per successful run, median.
    pub requests: Option<u64>,
}

impl Summary {
    pub fn of(runs: &[Run]) -> Summary {
        let ok: Vec<&Run> = runs.iter().filter(|run| run.ok()).collect();
        let mut failures: Vec<String> = Vec::new();
        for failure in runs.iter().filter_map(|run| run.failure.clone()) {
            if !failures.contains(&failure) {
                failures.push(failure);
            }
        }
        let walls: Vec<Duration> = ok.iter().map(|run| run.wall).collect();
        let rss: Vec<u64> = ok
            .iter()
            .filter_map(|run| run.resources.map(|resources| resources.peak_rss_bytes))
            .collect();
        let events = ok.iter().filter_map(|run| run.events);
        let served: Vec<u64> = ok
            .iter()
            .filter_map(|run| run.served.map(|served| served.bytes))
            .collect();
        let requests: Vec<u64> = ok
            .iter()
            .filter_map(|run| run.served.map(|served| served.requests))
            .collect();
        Summary {
            runs: runs.len(),
            ok: ok.len(),
            wall: median(&walls).map(|median| Spread {
                median,
                min: walls.iter().copied().min().unwrap_or(median),
                max: walls.iter().copied().max().unwrap_or(median),
            }),
            walls: walls.clone(),
            cpu: median(
                &ok.iter()
                    .filter_map(|run| run.resources.map(|resources| resources.cpu))
                    .collect::<Vec<_>>(),
            ),
            peak_rss_bytes: median(&rss),
            peak_rss_max_bytes: rss.iter().copied().max(),
            other_cpu: median(
                &ok.iter()
                    .filter_map(|run| run.other_cpu)
                    .collect::<Vec<_>>(),
            ),
            machine_cpu: median(
                &ok.iter()
                    .filter_map(|run| run.machine_cpu)
                    .collect::<Vec<_>>(),
            ),
            failures,
            last_byte_to_verified: median(
                &events
                    .clone()
                    .filter_map(|timing| timing.last_byte_to_verified)
                    .collect::<Vec<_>>(),
            ),
            last_byte_to_verified_seen: median(
                &events
                    .clone()
                    .filter_map(|timing| timing.last_byte_to_verified_seen)
                    .collect::<Vec<_>>(),
            ),
            retries: median(
                &events
                    .filter_map(|timing| timing.retries)
                    .collect::<Vec<_>>(),
            ),
            served_bytes: median(&served),
            served_bytes_max: served.iter().copied().max(),
            requests: median(&requests),
        }
    }

    /// Median bytes served ÷ `size`, and the largest run's.
    pub fn served_ratio(&self, size: u64) -> (Option<f64>, Option<f64>) {
        let of = |bytes: Option<u64>| bytes.map(|bytes| bytes as f64 / size.max(1) as f64);
        (of(self.served_bytes), of(self.served_bytes_max))
    }

    pub fn median_wall(&self) -> Option<Duration> {
        self.wall.map(|wall| wall.median)
    }
}

/// The middle value; for an even count, the lower of the two middle ones
/// (an observed value rather than an average of two).
pub fn median<T: Ord + Copy>(values: &[T]) -> Option<T> {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    sorted.get(sorted.len().saturating_sub(1) / 2).copied()
}

/// A markdown table.
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new<S: Into<String>>(header: impl IntoIterator<Item = S>) -> Table {
        Table {
            header: header.into_iter().map(Into::into).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        // A `|` inside a cell, even in backticks, would end the cell.
        let line = |cells: &[String]| {
            let cells: Vec<String> = cells.iter().map(|cell| cell.replace('|', "\\|")).collect();
            format!("| {} |\n", cells.join(" | "))
        };
        let mut text = line(&self.header);
        text.push_str(&line(&vec!["---".to_owned(); self.header.len()]));
        for row in &self.rows {
            text.push_str(&line(row));
        }
        text
    }
}

/// One of the targets and how this run measured against it.
pub struct Check {
    pub target: String,
    pub measured: String,
    /// `None` when it could not be measured (a tool missing, a run failed).
    pub pass: Option<bool>,
}

impl Check {
    /// `value ≤ limit`, both ratios.
    pub fn at_most(target: &str, value: Option<f64>, limit: f64) -> Check {
        Check {
            target: target.to_owned(),
            measured: value
                .map_or_else(|| "not measured".to_owned(), |value| format!("{value:.2}")),
            pass: value.map(|value| value <= limit),
        }
    }

    /// `value ≥ limit`, both ratios.
    pub fn at_least(target: &str, value: Option<f64>, limit: f64) -> Check {
        Check {
            target: target.to_owned(),
            measured: value
                .map_or_else(|| "not measured".to_owned(), |value| format!("{value:.2}")),
            pass: value.map(|value| value >= limit),
        }
    }

    pub fn render(checks: &[Check]) -> String {
        let mut table = Table::new(["target", "measured", "result"]);
        for check in checks {
            let result = match check.pass {
                Some(true) => "met",
                Some(false) => "**missed**",
                None => "n/a",
            };
            table.row(vec![
                check.target.clone(),
                check.measured.clone(),
                result.to_owned(),
            ]);
        }
        table.render()
    }
}

/// `a ÷ b` of two durations, if both exist.
pub fn ratio(numerator: Option<Duration>, denominator: Option<Duration>) -> Option<f64> {
    match (numerator, denominator) {
        (Some(numerator), Some(denominator)) if !denominator.is_zero() => {
            Some(numerator.as_secs_f64() / denominator.as_secs_f64())
        }
        _ => None,
    }
}

pub fn seconds(duration: Option<Duration>) -> String {
    duration.map_or_else(
        || "–".to_owned(),
        |duration| format!("{:.2}", duration.as_secs_f64()),
    )
}

pub fn milliseconds(duration: Option<Duration>) -> String {
    duration.map_or_else(
        || "–".to_owned(),
        |duration| format!("{:.0} ms", duration.as_secs_f64() * 1e3),
    )
}

pub fn mebibytes(bytes: Option<u64>) -> String {
    bytes.map_or_else(
        || "–".to_owned(),
        |bytes| format!("{:.1}", bytes as f64 / f64::from(1 << 20)),
    )
}

pub fn times(value: Option<f64>) -> String {
    value.map_or_else(|| "–".to_owned(), |value| format!("{value:.2}"))
}

/// Bytes served ÷ file size, median (max), three decimals: 1 % is the target's scale.
pub fn served_cell(summary: &Summary, size: u64) -> String {
    match summary.served_ratio(size) {
        (Some(median), Some(max)) if summary.ok > 1 => format!("{median:.3} ({max:.3})"),
        (Some(median), _) => format!("{median:.3}"),
        _ => "–".to_owned(),
    }
}

/// The usual row of a tool table: `ok`, wall, MB/s, CPU, peak RSS, ratio to
/// the reference, other CPU.
pub fn tool_row(
    label: &str,
    summary: &Summary,
    size: u64,
    reference: Option<Duration>,
) -> Vec<String> {
    let wall = summary.wall.map_or_else(
        || "failed".to_owned(),
        |wall| {
            format!(
                "{:.2} ({:.2}–{:.2})",
                wall.median.as_secs_f64(),
                wall.min.as_secs_f64(),
                wall.max.as_secs_f64()
            )
        },
    );
    let rate = summary.median_wall().map_or_else(
        || "–".to_owned(),
        |wall| format!("{:.0}", size as f64 / 1e6 / wall.as_secs_f64().max(1e-9)),
    );
    vec![
        label.to_owned(),
        format!("{}/{}", summary.ok, summary.runs),
        wall,
        rate,
        seconds(summary.cpu),
        mebibytes(summary.peak_rss_bytes),
        times(ratio(summary.median_wall(), reference)),
        served_cell(summary, size),
        summary
            .requests
            .map_or_else(|| "–".to_owned(), |requests| requests.to_string()),
        seconds(summary.other_cpu),
    ]
}

pub const TOOL_HEADER: [&str; 10] = [
    "tool",
    "ok",
    "wall s, median (min–max)",
    "MB/s",
    "CPU s",
    "peak RSS MiB",
    "÷ rangefetch",
    "served ÷ size, median (max)",
    "requests",
    "other CPU s",
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench_compare::measure::Resources;
    use crate::bench_compare::served::Served;

    fn run(wall_ms: u64, failure: Option<&str>) -> Run {
        let served = failure.is_none().then_some(Served {
            bytes: wall_ms * 1_000_000,
            requests: wall_ms / 100,
        });
        Run {
            wall: Duration::from_millis(wall_ms),
            resources: Some(Resources {
                cpu: Duration::from_millis(wall_ms / 2),
                peak_rss_bytes: wall_ms << 20,
            }),
            other_cpu: None,
            machine_cpu: None,
            failure: failure.map(str::to_owned),
            events: None,
            served,
        }
    }

    #[test]
    fn summaries_count_only_successful_runs() {
        let runs = [
            run(300, None),
            run(100, None),
            run(50, Some("exit code 1")),
            run(200, None),
            run(60, Some("exit code 1")),
        ];
        let summary = Summary::of(&runs);
        assert_eq!((summary.ok, summary.runs), (3, 5));
        assert_eq!(
            summary.wall,
            Some(Spread {
                median: Duration::from_millis(200),
                min: Duration::from_millis(100),
                max: Duration::from_millis(300),
            })
        );
        assert_eq!(summary.peak_rss_max_bytes, Some(300 << 20));
        assert_eq!(summary.failures, ["exit code 1"]);
        assert_eq!(median::<u64>(&[]), None);
        assert_eq!(median(&[4, 1, 3, 2]), Some(2));
    }

    #[test]
    fn rows_and_tables_render() {
        let summary = Summary::of(&[run(2000, None)]);
        let row = tool_row(
            "curl",
            &summary,
            1_000_000_000,
            Some(Duration::from_secs(1)),
        );
        assert_eq!(
            row,
            [
                "curl",
                "1/1",
                "2.00 (2.00–2.00)",
                "500",
                "1.00",
                "2000.0",
                "2.00",
                "2.000",
                "20",
                "–"
            ]
        );
        let summary = Summary::of(&[run(1000, None), run(1100, None), run(900, Some("x"))]);
        assert_eq!(served_cell(&summary, 1_000_000_000), "1.000 (1.100)");
        assert_eq!(summary.requests, Some(10));
        let mut table = Table::new(["a", "b"]);
        table.row(vec!["1".to_owned(), "`x | y`".to_owned()]);
        assert_eq!(
            table.render(),
            "| a | b |\n| --- | --- |\n| 1 | `x \\| y` |\n"
        );
    }
}
