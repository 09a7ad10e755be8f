//! One timed run of a [`Job`]: a clean download directory, the command under
//! GNU `time` (CPU and peak RSS of the whole process tree, from its
//! `wait4`), wall time from spawn to reap, the machine's other CPU use as a
//! contention flag, the server's own count of bytes served, then the hash
//! check and the cleanup.

use std::fs::{self, File};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::data::{self, is_sha256_hex};
use super::served::Served;
use super::server::{signal, stat_fields};
use super::tool::{Job, Verify};
use crate::cmd::describe;

/// What one run measured.
#[derive(Clone, Debug)]
pub struct Run {
    pub wall: Duration,
    /// From GNU `time`; `None` where it is not installed.
    pub resources: Option<Resources>,
    /// Busy CPU time of the machine during the run that was neither the
    /// tool's nor the server's. Loopback networking in softirq context lands
    /// here too, so a few tenths are normal; about one second per wall
    /// second means something else was running.
    pub other_cpu: Option<Duration>,
    /// Busy CPU time of the whole machine during the run (every process,
    /// softirq and steal included): divided by the cores, the shortest wall
    /// time that work could have taken.
    pub machine_cpu: Option<Duration>,
    /// Why the run does not count: exit status, timeout, wrong hash.
    pub failure: Option<String>,
    /// From rangefetch's `--json` events, for jobs that ask for them.
    pub events: Option<EventTiming>,
    /// Body bytes and requests the server counted for this run.
    pub served: Option<Served>,
}

impl Run {
    pub fn ok(&self) -> bool {
        self.failure.is_none()
    }
}

/// The process tree's use of the machine, as `wait4` reports it: CPU
/// summed over every process reaped, peak RSS of the largest single one.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Resources {
    pub cpu: Duration,
    pub peak_rss_bytes: u64,
}

/// Timing of rangefetch's last phase, from its JSON events.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct EventTiming {
    /// The `verified` event's `t_s` minus the `downloaded` event's: from the
    /// last byte received to the hash known and checked (before the final
    /// fsync and rename). `None` if an event is missing or the difference is
    /// negative.
    pub last_byte_to_verified: Option<Duration>,
    /// The same interval on our clock: arrival of the `verified` (or `done`)
    /// line minus arrival of the `downloaded` line.
    pub last_byte_to_verified_seen: Option<Duration>,
    pub retries: Option<u64>,
}

/// Runs jobs one at a time in a scratch directory.
#[derive(Clone, Debug)]
pub struct Runner {
    /// GNU time, if installed: `/usr/bin/time`.
    pub time_program: Option<PathBuf>,
    pub rangefetch: PathBuf,
    /// Cleaned before and after every run.
    pub download_dir: PathBuf,
    /// Holds GNU time's report of the last run.
    pub scratch_dir: PathBuf,
    pub quiet_wait: Duration,
}

/// `/proc/stat` and `/proc/PID/stat` count in USER_HZ, 100 on every Linux ABI.
const TICKS_PER_SECOND: f64 = 100.0;

impl Runner {
    /// Runs `job` once; the tool's stderr is appended to `log`.
    pub fn run(&self, job: &Job, log: &mut File) -> Result<Run> {
        reset_dir(&self.download_dir)?;
        if !self.quiet_wait.is_zero() {
            wait_for_quiet(self.quiet_wait);
        }
        writeln!(log, "=== {} :: {}", job.label, job.shown).context("cannot write the tool log")?;
        let time_report = self.scratch_dir.join("time.txt");
        let _ = fs::remove_file(&time_report);
        let mut command = match &self.time_program {
            Some(time) => {
                let mut command = Command::new(time);
                command
                    .args(["-f", "%e %U %S %M", "-o"])
                    .arg(&time_report)
                    .arg("--")
                    .arg(&job.program);
                command
            }
            None => Command::new(&job.program),
        };
        command
            .args(&job.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log.try_clone().context("cannot share the tool log")?);
        // Loopback only: a proxy from the environment would distort every figure.
        for variable in [
            "http_proxy",
            "https_proxy",
            "all_proxy",
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "ALL_PROXY",
        ] {
            command.env_remove(variable);
        }
        own_group(&mut command);

        let served_mark = job.source.counter.as_ref().map(|counter| counter.mark());
        let busy_before = machine_busy();
        let server_before = processes_cpu(&job.source.server_pids);
        let started = Instant::now();
        let mut child = command
            .spawn()
            .with_context(|| format!("cannot start {}", job.program))?;
        let group = format!("-{}", child.id());
        let stdout = child.stdout.take().expect("stdout was set to piped");
        let reader = thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .map(|line| (Instant::now(), line))
                .collect::<Vec<_>>()
        });
        let (finished, finish_signal) = mpsc::channel::<()>();
        let watchdog_group = group.clone();
        let timeout = job.timeout;
        let watchdog = thread::spawn(move || {
            let timed_out = matches!(
                finish_signal.recv_timeout(timeout),
                Err(mpsc::RecvTimeoutError::Timeout)
            );
            if timed_out {
                signal("-KILL", &watchdog_group);
            }
            timed_out
        });
        let status = child.wait().context("cannot wait for the tool")?;
        let wall = started.elapsed();
        let busy_after = machine_busy();
        let server_after = processes_cpu(&job.source.server_pids);
        let _ = finished.send(());
        let timed_out = watchdog.join().unwrap_or(false);
        // Whatever the tool left behind in its group (a backgrounded helper).
        signal("-KILL", &group);
        let lines = reader.join().unwrap_or_default();
        let served = match (&job.source.counter, served_mark) {
            (Some(counter), Some(Ok(mark))) => counter.since(mark).map(Some),
            (_, Some(Err(error))) => Err(error),
            _ => Ok(None),
        };
        let served = match served {
            Ok(served) => served,
            Err(error) => {
                eprintln!("note: bytes served not counted: {error:#}");
                None
            }
        };

        let resources = self
            .time_program
            .as_ref()
            .and_then(|_| fs::read_to_string(&time_report).ok())
            .and_then(|report| parse_time_report(&report));
        let other_cpu = match (busy_before, busy_after, resources) {
            (Some(before), Some(after), Some(resources)) => {
                let server = (server_after - server_before).max(0.0);
                let other = after - before - resources.cpu.as_secs_f64() - server;
                Some(Duration::from_secs_f64(other.max(0.0)))
            }
            _ => None,
        };
        let machine_cpu = busy_before
            .zip(busy_after)
            .map(|(before, after)| Duration::from_secs_f64((after - before).max(0.0)));
        let failure = self.failure(job, status, timed_out, &lines);
        let events = job.json_events.then(|| event_timing(&lines));
        let _ = fs::remove_dir_all(&self.download_dir);
        if let Some(failure) = &failure {
            writeln!(log, "=== failed: {failure}").context("cannot write the tool log")?;
        }
        Ok(Run {
            wall,
            resources,
            other_cpu,
            machine_cpu,
            failure,
            events,
            served,
        })
    }

    /// Why the run failed, or `None`: the exit status first, then the hash.
    fn failure(
        &self,
        job: &Job,
        status: ExitStatus,
        timed_out: bool,
        lines: &[(Instant, String)],
    ) -> Option<String> {
        if timed_out {
            return Some(format!("timed out after {} s", job.timeout.as_secs()));
        }
        if !status.success() {
            return Some(describe(status));
        }
        let got = match job.verify {
            Verify::ExitStatus => return None,
            Verify::Stdout => lines
                .iter()
                .rev()
                .find_map(|(_, line)| {
                    line.split_whitespace()
                        .next()
                        .filter(|word| is_sha256_hex(word))
                })
                .map(str::to_ascii_lowercase)
                .ok_or_else(|| "no SHA-256 on stdout".to_owned()),
            // The tool said the hash matched; check the file it left, outside the timed run.
            Verify::ByTool => data::hash(&self.rangefetch, &job.output)
                .map_err(|err| format!("cannot hash the output: {err:#}")),
        };
        match got {
            Ok(hex) if hex == job.source.sha256 => None,
            Ok(hex) => Some(format!("wrong SHA-256 {hex}")),
            Err(why) => Some(why),
        }
    }
}

/// Starts the tool in a process group of its own, so that it and everything
/// it forks (a pipeline's processes) can be killed together on a timeout. A
/// Ctrl-C in the terminal therefore does not reach it: it ends its download
/// alone. The servers stay in xtask's group, so that a Ctrl-C stops them
/// (xtask dies without running its guards).
fn own_group(command: &mut Command) -> &mut Command {
    use std::os::unix::process::CommandExt;
    command.process_group(0)
}

fn reset_dir(dir: &Path) -> Result<()> {
    match fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(err).with_context(|| format!("cannot clean {}", dir.display())),
    }
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))
}

/// GNU time's `-f '%e %U %S %M'` line, the last of its report (a line
/// about a non-zero exit status may precede it).
fn parse_time_report(report: &str) -> Option<Resources> {
    let line = report.lines().rev().find(|line| !line.trim().is_empty())?;
    let fields: Vec<&str> = line.split_whitespace().collect();
    let [_wall, user, system, peak_kib] = fields[..] else {
        return None;
    };
    let user: f64 = user.parse().ok()?;
    let system: f64 = system.parse().ok()?;
    let peak_kib: u64 = peak_kib.parse().ok()?;
    Some(Resources {
        cpu: Duration::try_from_secs_f64(user + system).ok()?,
        peak_rss_bytes: peak_kib * 1024,
    })
}

/// Busy CPU seconds of the whole machine so far: user, nice, system, irq,
/// softirq and steal from the first line of /proc/stat.
fn machine_busy() -> Option<f64> {
    let stat = fs::read_to_string("/proc/stat").ok()?;
    let ticks: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .map(|field| field.parse().unwrap_or(0))
        .collect();
    let busy = [0, 1, 2, 5, 6, 7]
        .iter()
        .map(|&index| ticks.get(index).copied().unwrap_or(0))
        .sum::<u64>();
    Some(busy as f64 / TICKS_PER_SECOND)
}

/// User + system CPU seconds of these processes, all their threads included.
fn processes_cpu(pids: &[u32]) -> f64 {
    pids.iter()
        .filter_map(|pid| fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        .map(|stat| {
            let fields = stat_fields(&stat);
            let ticks = |index: usize| {
                fields
                    .get(index)
                    .and_then(|field| field.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            (ticks(11) + ticks(12)) as f64 / TICKS_PER_SECOND
        })
        .sum()
}

/// Waits, at most `limit`, until the machine was less than 20% busy over a second.
fn wait_for_quiet(limit: Duration) {
    let cores = thread::available_parallelism().map_or(1, usize::from) as f64;
    let deadline = Instant::now() + limit;
    loop {
        let before = machine_busy();
        thread::sleep(Duration::from_secs(1));
        let quiet = match (before, machine_busy()) {
            (Some(before), Some(after)) => after - before < 0.2 * cores,
            _ => true,
        };
        if quiet || Instant::now() >= deadline {
            return;
        }
    }
}

/// The last phase's length: from the `downloaded` event to the `verified`
/// event (both `t_s`, one clock), or, from a binary without `verified`, to
/// the final `done` event's `elapsed_s`.
fn event_timing(lines: &[(Instant, String)]) -> EventTiming {
    let event = |name: &str| {
        lines
            .iter()
            .rev()
            .find(|(_, line)| json_string(line, "event") == Some(name))
    };
    let (Some(downloaded), Some(done)) = (event("downloaded"), event("done")) else {
        return EventTiming::default();
    };
    let (end, end_key) = match event("verified") {
        Some(verified) => (verified, "t_s"),
        None => (done, "elapsed_s"),
    };
    let last_byte_to_verified = json_number(&end.1, end_key)
        .zip(json_number(&downloaded.1, "t_s"))
        .and_then(|(end, last_byte)| Duration::try_from_secs_f64(end - last_byte).ok());
    EventTiming {
        last_byte_to_verified,
        last_byte_to_verified_seen: end.0.checked_duration_since(downloaded.0),
        retries: json_number(&done.1, "retries").map(|retries| retries as u64),
    }
}

/// The string value of `"key":"…"` in one compact JSON line (serde_json's
/// output has no spaces and our keys' values need no escapes).
fn json_string<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let start = line.find(&format!("\"{key}\":\""))? + key.len() + 4;
    let rest = &line[start..];
    Some(&rest[..rest.find('"')?])
}

/// The number value of `"key":…` in one compact JSON line.
fn json_number(line: &str, key: &str) -> Option<f64> {
    let start = line.find(&format!("\"{key}\":"))? + key.len() + 3;
    let rest = &line[start..];
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || "+-.eE".contains(c)))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_report_after_a_failure_line() {
        let report = "Command exited with non-zero status 3\n1.50 0.75 0.25 20480\n";
        assert_eq!(
            parse_time_report(report),
            Some(Resources {
                cpu: Duration::from_secs(1),
                peak_rss_bytes: 20 << 20,
            })
        );
        assert_eq!(parse_time_report("Command terminated by signal 9\n"), None);
    }

    #[test]
    fn json_fields_from_event_lines() {
        let line = r#"{"bytes":10,"event":"downloaded","t_s":1.25e0}"#;
        assert_eq!(json_string(line, "event"), Some("downloaded"));
        assert_eq!(json_number(line, "t_s"), Some(1.25));
        assert_eq!(json_number(line, "missing"), None);
    }

    #[test]
    fn last_phase_from_events() {
        let start = Instant::now();
        let later = start + Duration::from_millis(30);
        let lines = vec![
            (start, r#"{"event":"progress","t_s":0.5}"#.to_owned()),
            (
                start,
                r#"{"bytes":10,"event":"downloaded","t_s":2.0}"#.to_owned(),
            ),
            (
                later,
                r#"{"elapsed_s":2.04,"event":"done","ok":true,"retries":3}"#.to_owned(),
            ),
        ];
        let timing = event_timing(&lines);
        let json_gap = timing.last_byte_to_verified.expect("both events present");
        assert!((json_gap.as_secs_f64() - 0.04).abs() < 1e-9);
        assert_eq!(
            timing.last_byte_to_verified_seen,
            Some(Duration::from_millis(30))
        );
        assert_eq!(timing.retries, Some(3));
        assert_eq!(event_timing(&lines[..2]), EventTiming::default());
        let mut with_verified = lines.clone();
        with_verified.insert(
            2,
            (
                start,
                r#"{"event":"verified","sha256":"ab","t_s":2.001}"#.to_owned(),
            ),
        );
        let gap = event_timing(&with_verified)
            .last_byte_to_verified
            .expect("verified present");
        assert!((gap.as_secs_f64() - 0.001).abs() < 1e-9);
    }
}
