//! The scenarios: which jobs each one times, from which server, and the
//! markdown section and target checks each one reports. Jobs alternate:
//! every round runs each job once, starting one job later than the round
//! before, so that no tool always runs first or right after another.

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, Result};

use super::data::DataFile;
use super::limits;
use super::measure::{Run, Runner};
use super::options::{Options, Scenario, Sizes};
use super::report::{self, Check, Summary, Table, ratio, tool_row};
use super::server::{ChildServer, Nginx, SLOW_RATE_BYTES_PER_SEC, Source};
use super::size::format_size;
use super::tool::{self, CONNECTIONS, Job, Tool, Variant, Verify};

/// Every response of the flaky link ends after a random count of body bytes
/// in this range: rangefetch-testserver's flag for that, and its value.
const TESTSERVER_CUT_FLAG: &str = "--cut";
const TESTSERVER_CUT_VALUE: &str = "5MB-50MB";
/// The issue's memory ceiling at default flags.
const RSS_LIMIT_BYTES: u64 = 32 << 20;
const SWEEP_CONNECTIONS: [u16; 5] = [1, 2, 4, 8, 16];
const SWEEP_CHUNK_SIZES: [u64; 3] = [2 << 20, 8 << 20, 32 << 20];
/// Issue 19's small files (clean link) and its two-mirror file.
const SMALL_SIZES: [u64; 2] = [16 << 20, 64 << 20];
const MIRRORED_SIZE: u64 = 32 << 20;
/// Counted runs at least, where one run is short (small files) or the
/// issue asks for a spread (the disk beside its floor).
const MIN_SHORT_RUNS: usize = 5;
/// Issue 19's bounds on bytes served ÷ file size.
const SERVED_CLEAN_LARGE: f64 = 1.01;
const SERVED_CLEAN_LARGE_FROM: u64 = 64 << 20;
const SERVED_CLEAN_SMALL: f64 = 1.03;
const SERVED_FLAKY: f64 = 1.05;
/// Issue 13's bound on download + verify onto tmpfs ÷ `rangefetch hash`.
const TMPFS_HASH_RATIO: f64 = 1.25;

/// What the scenarios share.
pub struct Context<'a> {
    pub options: &'a Options,
    /// The tools that can run here, in the requested order.
    pub tools: &'a [Tool],
    pub runner: &'a Runner,
    pub rangefetch: &'a Path,
    pub testserver: &'a Path,
    pub log_dir: &'a Path,
    /// Every run, one line each.
    pub csv: &'a mut File,
    pub nginx: Option<&'a Nginx>,
    pub big: Option<&'a DataFile>,
    pub mid: Option<&'a DataFile>,
    /// nginx's document root, where further test files are created.
    pub data_dir: &'a Path,
    /// Bytes per second the output's disk takes with `fsync`, measured at
    /// the start of the run.
    pub disk_rate: Option<f64>,
}

/// One scenario's part of the results.
#[derive(Default)]
pub struct Section {
    pub text: String,
    pub checks: Vec<Check>,
    /// Counted rangefetch runs that failed: a correctness problem, not noise.
    pub rangefetch_failures: usize,
}

impl Context<'_> {
    pub fn run(&mut self, scenario: Scenario) -> Result<Section> {
        match scenario {
            Scenario::Fast => self.fast(),
            Scenario::Slow => self.slow(),
            Scenario::Flaky => self.flaky(),
            Scenario::Small => self.small(),
            Scenario::Mirrors => self.mirrors(),
            Scenario::Tmpfs => self.tmpfs(),
            Scenario::Disk => self.disk(),
            Scenario::Rss => self.rss(),
            Scenario::Sweep => self.sweep(),
        }
    }

    fn fast(&mut self) -> Result<Section> {
        let (Some(nginx), Some(big)) = (self.nginx, self.big) else {
            return Ok(skipped("fast", "nginx is not available"));
        };
        let source = nginx.fast(big);
        let jobs = self.tool_jobs(&source, &Variant::default(), steady_timeout(big.size));
        let summaries = self.run_rounds("fast", &jobs)?;
        let mut section = Section::default();
        let _ = writeln!(
            section.text,
            "## fast: {} from nginx, unthrottled, default flags\n",
            format_size(big.size)
        );
        section.text.push_str(&tool_table(&jobs, &summaries));
        let reference = reference_wall(&jobs, &summaries);
        section.checks.push(Check::at_most(
            "fast: rangefetch ÷ aria2c ≤ 0.20",
            ratio(reference, wall_of(Tool::Aria2c, &jobs, &summaries)),
            0.20,
        ));
        section.checks.push(Check::at_most(
            "fast: rangefetch ÷ `curl | tee | sha256sum` ≤ 0.27",
            ratio(reference, wall_of(Tool::Curl, &jobs, &summaries)),
            0.27,
        ));
        section
            .checks
            .push(clean_served_check("fast", &jobs, &summaries, big.size));
        if let Some(rate) = self.disk_rate {
            let floor = Duration::from_secs_f64(big.size as f64 / rate);
            let _ = writeln!(
                section.text,
                "\nDurable-write floor: this disk took {:.0} MB/s written and flushed with `fsync` \
                 (measured at the start of the run), so {} cannot be on it, flushed, in under \
                 {:.2} s; rangefetch ÷ that floor: {}. rangefetch is the only tool here that \
                 flushes the file before publishing it; the others leave it in the page cache.",
                rate / 1e6,
                format_size(big.size),
                floor.as_secs_f64(),
                report::times(ratio(reference, Some(floor)))
            );
        }
        // The file was just read by every run, so it is in the page cache.
        let openssl = limits::openssl_sha256_rate();
        let hashed = limits::rangefetch_hash_rate(self.rangefetch, big);
        if let Err(error) = &hashed {
            eprintln!("note: rangefetch hash: {error:#}");
        }
        let hashed = hashed.ok();
        let hash_ratio = hashed.zip(openssl).map(|(ours, theirs)| ours / theirs);
        let _ = writeln!(
            section.text,
            "\n`rangefetch hash` of the {} file in the page cache: {} MB/s (best of 3); \
             `openssl speed -evp sha256` (16 KiB blocks, one core): {} MB/s; ratio {}.",
            format_size(big.size),
            hashed.map_or_else(|| "–".to_owned(), |rate| format!("{:.0}", rate / 1e6)),
            openssl.map_or_else(|| "–".to_owned(), |rate| format!("{:.0}", rate / 1e6)),
            report::times(hash_ratio)
        );
        section.checks.push(Check::at_least(
            "hash: `rangefetch hash` ÷ `openssl speed -evp sha256` ≥ 0.95",
            hash_ratio,
            0.95,
        ));
        section.finish("fast", &jobs, &summaries);
        Ok(section)
    }

    fn slow(&mut self) -> Result<Section> {
        let (Some(nginx), Some(mid)) = (self.nginx, self.mid) else {
            return Ok(skipped("slow", "nginx is not available"));
        };
        let source = nginx.slow(mid);
        let variant = Variant {
            rangefetch_flags: vec!["-c".to_owned(), CONNECTIONS.to_string()],
            rangefetch_json: true,
            flaky: false,
        };
        let jobs = self.tool_jobs(&source, &variant, steady_timeout(mid.size));
        let summaries = self.run_rounds("slow", &jobs)?;
        let ideal = Duration::from_secs_f64(
            mid.size as f64 / (f64::from(CONNECTIONS) * SLOW_RATE_BYTES_PER_SEC as f64),
        );
        let mut section = Section::default();
        let _ = writeln!(
            section.text,
            "## slow: {} from nginx with `limit_rate 20m` per connection, {CONNECTIONS} connections\n\n\
             (`sendfile_max_chunk 256k` in that server block, so that responses of any size are \
             paced; rangefetch with `-c {CONNECTIONS}`, the others with their usual {CONNECTIONS}, curl with one)\n",
            format_size(mid.size)
        );
        section.text.push_str(&tool_table(&jobs, &summaries));
        let reference = reference_wall(&jobs, &summaries);
        let rangefetch = reference_summary(&jobs, &summaries);
        let _ = writeln!(
            section.text,
            "\nIdeal transfer time, size ÷ ({CONNECTIONS} × 20 MiB/s): {:.2} s; rangefetch ÷ ideal: {}.\n",
            ideal.as_secs_f64(),
            report::times(ratio(reference, Some(ideal)))
        );
        if let Some(rate) = self.disk_rate {
            let floor = ideal.max(Duration::from_secs_f64(mid.size as f64 / rate));
            let _ = writeln!(
                section.text,
                "With the flush: the disk took {:.0} MB/s written and flushed (at the start of \
                 the run), so the floor is the longer of the transfer and the flush, {:.2} s; \
                 rangefetch ÷ that floor: {}.\n",
                rate / 1e6,
                floor.as_secs_f64(),
                report::times(ratio(reference, Some(floor)))
            );
        }
        if let Some(summary) = rangefetch {
            let _ = writeln!(
                section.text,
                "rangefetch, last byte received → verified (median): {} from its JSON events \
                 (`done.elapsed_s − downloaded.t_s`), {} between those two lines' arrival here.",
                report::milliseconds(summary.last_byte_to_verified),
                report::milliseconds(summary.last_byte_to_verified_seen),
            );
        }
        section.checks.push(Check::at_most(
            "slow: rangefetch -c 16 ÷ ideal transfer time ≤ 1.15",
            ratio(reference, Some(ideal)),
            1.15,
        ));
        section.checks.push(Check::at_most(
            "slow: rangefetch ÷ axel + sha256sum ≤ 0.60",
            ratio(reference, wall_of(Tool::Axel, &jobs, &summaries)),
            0.60,
        ));
        let gap = rangefetch.and_then(|summary| summary.last_byte_to_verified);
        section.checks.push(Check {
            target: "slow: last byte received → verified ≤ 50 ms".to_owned(),
            measured: report::milliseconds(gap),
            pass: gap.map(|gap| gap <= Duration::from_millis(50)),
        });
        section
            .checks
            .push(clean_served_check("slow", &jobs, &summaries, mid.size));
        section.finish("slow", &jobs, &summaries);
        Ok(section)
    }

    fn flaky(&mut self) -> Result<Section> {
        let servers = self.flaky_servers()?;
        let size = servers.flaky.source.size;
        let timeout = Duration::from_secs(120).max(Duration::from_secs(size >> 22));
        let variant = Variant {
            rangefetch_flags: Vec::new(),
            rangefetch_json: true,
            flaky: true,
        };
        let mut jobs = self.tool_jobs(&servers.flaky.source, &variant, timeout);
        if self.tools.contains(&Tool::Rangefetch) {
            let mut fault_free = tool::job(
                Tool::Rangefetch,
                &variant,
                &servers.fault_free.source,
                &self.runner.download_dir,
                self.rangefetch,
                timeout,
            );
            fault_free.label = "rangefetch, fault-free (same server, no cuts)".to_owned();
            jobs.push(fault_free);
        }
        let summaries = self.run_rounds("flaky", &jobs)?;
        let description = servers.description.clone();
        drop(servers);
        let mut section = Section::default();
        let _ = writeln!(
            section.text,
            "## flaky: {} from {}, every response cut after a random 5–50 MB\n",
            format_size(size),
            description
        );
        section.text.push_str(&tool_table(&jobs, &summaries));
        let reference = reference_wall(&jobs, &summaries);
        let fault_free = jobs
            .iter()
            .zip(&summaries)
            .find(|(job, _)| job.label.contains("fault-free"))
            .and_then(|(_, summary)| summary.median_wall());
        if let Some(summary) = reference_summary(&jobs, &summaries) {
            let _ = writeln!(
                section.text,
                "\nrangefetch on the flaky link ÷ fault-free: {}; retries per run (median): {}.",
                report::times(ratio(reference, fault_free)),
                summary
                    .retries
                    .map_or_else(|| "–".to_owned(), |retries| retries.to_string())
            );
        }
        section.checks.push(Check::at_most(
            "flaky: rangefetch ÷ its fault-free time ≤ 1.25",
            ratio(reference, fault_free),
            1.25,
        ));
        section.checks.push(served_check(
            "flaky: rangefetch bytes served ÷ size ≤ 1.05 (max of runs)",
            reference_summary(&jobs, &summaries),
            size,
            SERVED_FLAKY,
        ));
        let rivals: Vec<(Tool, Option<Duration>)> = [Tool::Aria2c, Tool::Axel, Tool::Wget2]
            .into_iter()
            .filter(|tool| self.tools.contains(tool))
            .map(|tool| (tool, wall_of(tool, &jobs, &summaries)))
            .collect();
        let measured: Vec<String> = rivals
            .iter()
            .map(|(tool, wall)| {
                format!("{} {}", tool.name(), report::times(ratio(reference, *wall)))
            })
            .collect();
        let ahead = reference.filter(|_| !rivals.is_empty()).map(|reference| {
            rivals
                .iter()
                .all(|(_, wall)| wall.is_none_or(|wall| reference < wall))
        });
        section.checks.push(Check {
            target: "flaky: rangefetch ahead of aria2c, axel and wget2 (rangefetch ÷ each < 1)"
                .to_owned(),
            measured: if measured.is_empty() {
                "not measured".to_owned()
            } else {
                measured.join(", ")
            },
            pass: ahead,
        });
        section.finish("flaky", &jobs, &summaries);
        Ok(section)
    }

    fn small(&mut self) -> Result<Section> {
        let Some(nginx) = self.nginx else {
            return Ok(skipped("small", "nginx is not available"));
        };
        let runs = self.options.runs.max(MIN_SHORT_RUNS);
        let mut section = Section::default();
        let _ = writeln!(
            section.text,
            "## small: {} and {} from nginx, unthrottled, default flags\n\n\
             ({runs} counted runs each: one run is short.)",
            format_size(SMALL_SIZES[0]),
            format_size(SMALL_SIZES[1])
        );
        let mut all_jobs = Vec::new();
        let mut all_summaries = Vec::new();
        for size in SMALL_SIZES {
            let file = DataFile::ensure(self.data_dir, size, self.rangefetch)?;
            let source = nginx.fast(&file);
            let jobs = self.tool_jobs(&source, &Variant::default(), steady_timeout(size));
            let runner = self.runner;
            let name = format!("small-{}", format_size(size));
            let summaries = self.run_rounds_with(&name, &jobs, runner, runs)?;
            let _ = writeln!(section.text, "\n{}:\n", format_size(size));
            section.text.push_str(&tool_table(&jobs, &summaries));
            section
                .checks
                .push(clean_served_check(&name, &jobs, &summaries, size));
            all_jobs.extend(jobs);
            all_summaries.extend(summaries);
        }
        section.finish("small", &all_jobs, &all_summaries);
        Ok(section)
    }

    fn mirrors(&mut self) -> Result<Section> {
        let Some(nginx) = self.nginx else {
            return Ok(skipped("mirrors", "nginx is not available"));
        };
        let file = DataFile::ensure(self.data_dir, MIRRORED_SIZE, self.rangefetch)?;
        let source = nginx.mirrored(&file);
        let (jobs, single): (Vec<Job>, Vec<Job>) = self
            .tool_jobs(&source, &Variant::default(), steady_timeout(file.size))
            .into_iter()
            .partition(|job| job.tool.is_some_and(Tool::takes_mirrors));
        let runs = self.options.runs.max(MIN_SHORT_RUNS);
        let runner = self.runner;
        let summaries = self.run_rounds_with("mirrors", &jobs, runner, runs)?;
        let mut section = Section::default();
        let _ = writeln!(
            section.text,
            "## mirrors: {} from two equal unthrottled nginx ports, default flags\n\n\
             ({runs} counted runs; bytes served are both mirrors' together.)\n",
            format_size(file.size)
        );
        section.text.push_str(&tool_table(&jobs, &summaries));
        if !single.is_empty() {
            let names: Vec<&str> = single
                .iter()
                .filter_map(|job| job.tool.map(Tool::name))
                .collect();
            let _ = writeln!(
                section.text,
                "\nNot run: {} (one URL per file).",
                names.join(", ")
            );
        }
        section.finish("mirrors", &jobs, &summaries);
        Ok(section)
    }

    fn tmpfs(&mut self) -> Result<Section> {
        let (Some(nginx), Some(big)) = (self.nginx, self.big) else {
            return Ok(skipped("tmpfs", "nginx is not available"));
        };
        if !self.tools.contains(&Tool::Rangefetch) {
            return Ok(skipped("tmpfs", "rangefetch is not among --tools"));
        }
        let tmpfs = &self.options.tmpfs;
        let filesystem = limits::filesystem_type(tmpfs);
        if filesystem.as_deref() != Some("tmpfs") {
            let why = format!(
                "{} is not on tmpfs ({}); see --tmpfs",
                tmpfs.display(),
                filesystem.as_deref().unwrap_or("unknown filesystem")
            );
            return Ok(skipped("tmpfs", &why));
        }
        let runner = Runner {
            download_dir: tmpfs.join(format!("rangefetch-bench-compare-{}", std::process::id())),
            ..self.runner.clone()
        };
        let source = nginx.fast(big);
        let timeout = steady_timeout(big.size);
        let mut jobs = Vec::new();
        // Default flags, and issue 13's and 19's other connection counts.
        for connections in [None, Some(4), Some(16)] {
            let flags: Vec<String> = connections
                .map(|count: u16| vec!["-c".to_owned(), count.to_string()])
                .unwrap_or_default();
            let variant = Variant {
                rangefetch_flags: flags.clone(),
                rangefetch_json: true,
                flaky: false,
            };
            let mut job = tool::job(
                Tool::Rangefetch,
                &variant,
                &source,
                &runner.download_dir,
                self.rangefetch,
                timeout,
            );
            if !flags.is_empty() {
                job.label = format!("rangefetch {}", flags.join(" "));
            }
            jobs.push(job);
        }
        let hash_label = "rangefetch hash, same file from the page cache";
        jobs.push(tool::command_job(
            hash_label,
            Some(Tool::Rangefetch),
            vec![
                self.rangefetch.display().to_string(),
                "hash".to_owned(),
                big.path.display().to_string(),
            ],
            "rangefetch hash $FILE",
            Verify::Stdout,
            &source,
            timeout,
        ));
        // The other half of the CPU path's floor: copying the same bytes from
        // the page cache into fresh tmpfs pages, which every download into
        // tmpfs must do once and which, on a VM, costs what the host charges
        // for first-touched memory.
        let copy_label = "dd into tmpfs, same file from the page cache";
        jobs.push(tool::command_job(
            copy_label,
            None,
            vec![
                "dd".to_owned(),
                format!("if={}", big.path.display()),
                format!("of={}", runner.download_dir.join("dd.bin").display()),
                "bs=1M".to_owned(),
                "status=none".to_owned(),
            ],
            "dd if=$FILE of=$(dirname $OUT)/dd.bin bs=1M status=none",
            Verify::ExitStatus,
            &source,
            timeout,
        ));
        let runs = self.options.runs.max(MIN_SHORT_RUNS);
        let result = self.run_rounds_with("tmpfs", &jobs, &runner, runs);
        let _ = std::fs::remove_dir_all(&runner.download_dir);
        let summaries = result?;
        let wall_labelled = |label: &str| {
            jobs.iter()
                .zip(&summaries)
                .find(|(job, _)| job.label == label)
                .and_then(|(_, summary)| summary.wall)
        };
        let hashed = wall_labelled(hash_label);
        let copied = wall_labelled(copy_label);
        // On two or more cores the hash and the copy can overlap: the floor
        // is the slower of the two.
        let floor = hashed
            .zip(copied)
            .map(|(hash, copy)| hash.median.max(copy.median));
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let mut section = Section::default();
        let _ = writeln!(
            section.text,
            "## tmpfs: {} from nginx, unthrottled, into {} (tmpfs), beside `rangefetch hash`\n\n\
             ({runs} counted rounds; each round downloads with each flag set and hashes the \
             served file once, from the page cache. No disk is in the way: this is the CPU path.)\n",
            format_size(big.size),
            tmpfs.display()
        );
        section.text.push_str(&tool_table(&jobs, &summaries));
        let reference = reference_wall(&jobs, &summaries);
        let _ = writeln!(section.text);
        for (job, summary) in jobs.iter().zip(&summaries) {
            if job.label == hash_label || job.label == copy_label {
                continue;
            }
            let min_ratio = summary
                .wall
                .zip(hashed)
                .map(|(wall, hash)| wall.min.as_secs_f64() / hash.min.as_secs_f64().max(1e-9));
            let _ = writeln!(
                section.text,
                "- {} ÷ `rangefetch hash`: median {} (fastest runs: {}); last byte → verified \
                 (median, JSON events): {}.",
                job.label,
                report::times(ratio(summary.median_wall(), hashed.map(|hash| hash.median))),
                report::times(min_ratio),
                report::milliseconds(summary.last_byte_to_verified),
            );
            let _ = writeln!(
                section.text,
                "  ÷ the slower of `rangefetch hash` and `dd` into tmpfs (medians): {}.",
                report::times(ratio(summary.median_wall(), floor)),
            );
            // The other floor: the work the run made the machine do (the
            // download's threads, nginx, loopback softirq), spread over
            // every core.
            let work_floor = summary.machine_cpu.map(|busy| busy.div_f64(cores as f64));
            let _ = writeln!(
                section.text,
                "  The machine's busy CPU during the run (every process: rangefetch, nginx, \
                 loopback softirq), median: {} s, i.e. {} s on {cores} cores; wall ÷ that: {}.",
                report::seconds(summary.machine_cpu),
                report::seconds(work_floor),
                report::times(ratio(summary.median_wall(), work_floor)),
            );
        }
        section.checks.push(Check::at_most(
            "tmpfs: rangefetch download + verify ÷ `rangefetch hash` ≤ 1.25 (medians)",
            ratio(reference, hashed.map(|hash| hash.median)),
            TMPFS_HASH_RATIO,
        ));
        section
            .checks
            .push(clean_served_check("tmpfs", &jobs, &summaries, big.size));
        section.finish("tmpfs", &jobs, &summaries);
        Ok(section)
    }

    fn disk(&mut self) -> Result<Section> {
        let (Some(nginx), Some(big)) = (self.nginx, self.big) else {
            return Ok(skipped("disk", "nginx is not available"));
        };
        if !self.tools.contains(&Tool::Rangefetch) {
            return Ok(skipped("disk", "rangefetch is not among --tools"));
        }
        let source = nginx.fast(big);
        let timeout = steady_timeout(big.size);
        let variant = Variant {
            rangefetch_flags: Vec::new(),
            rangefetch_json: true,
            flaky: false,
        };
        let download_dir = &self.runner.download_dir;
        let blocks = big.size.div_ceil(4 << 20);
        let floor_label = "dd floor (conv=fdatasync)";
        let jobs = vec![
            tool::job(
                Tool::Rangefetch,
                &variant,
                &source,
                download_dir,
                self.rangefetch,
                timeout,
            ),
            tool::command_job(
                floor_label,
                None,
                vec![
                    "dd".to_owned(),
                    "if=/dev/zero".to_owned(),
                    format!("of={}", download_dir.join("dd.bin").display()),
                    "bs=4M".to_owned(),
                    format!("count={blocks}"),
                    "conv=fdatasync".to_owned(),
                    "status=none".to_owned(),
                ],
                &format!(
                    "dd if=/dev/zero of=$(dirname $OUT)/dd.bin bs=4M count={blocks} \
                     conv=fdatasync status=none"
                ),
                Verify::ExitStatus,
                &source,
                timeout,
            ),
        ];
        let runs = self.options.runs.max(MIN_SHORT_RUNS);
        let runner = self.runner;
        let summaries = self.run_rounds_with("disk", &jobs, runner, runs)?;
        // The download directory is gone after the runs; the out directory holds it.
        let filesystem = download_dir
            .parent()
            .and_then(limits::filesystem_type)
            .unwrap_or_else(|| "?".to_owned());
        let mut section = Section::default();
        let _ = writeln!(
            section.text,
            "## disk: {} from nginx onto {} ({filesystem}), beside a `dd … conv=fdatasync` floor\n\n\
             ({runs} counted rounds, the two commands alternating which goes first; both write \
             to the same directory. rangefetch flushes its file once before the rename.)\n",
            format_size(big.size),
            download_dir.display()
        );
        section.text.push_str(&tool_table(&jobs, &summaries));
        let [ours, floor] = [&summaries[0], &summaries[1]];
        let rounds: Vec<String> = ours
            .walls
            .iter()
            .zip(&floor.walls)
            .enumerate()
            .map(|(index, (ours, floor))| {
                format!(
                    "{}: {:.2} s vs {:.2} s",
                    index + 1,
                    ours.as_secs_f64(),
                    floor.as_secs_f64()
                )
            })
            .collect();
        let _ = writeln!(
            section.text,
            "\nRound by round, rangefetch vs the floor: {}.\n\n\
             rangefetch ÷ floor, medians: {}; slowest rangefetch run ÷ slowest floor run: {}.",
            rounds.join("; "),
            report::times(ratio(ours.median_wall(), floor.median_wall())),
            report::times(ratio(
                ours.wall.map(|wall| wall.max),
                floor.wall.map(|wall| wall.max)
            )),
        );
        section.checks.push(Check::at_most(
            "disk: slowest rangefetch run ÷ slowest `dd conv=fdatasync` run ≤ 1 \
             (issue 13: no run far outside the floor's own spread)",
            ratio(
                ours.wall.map(|wall| wall.max),
                floor.wall.map(|wall| wall.max),
            ),
            1.0,
        ));
        section
            .checks
            .push(clean_served_check("disk", &jobs, &summaries, big.size));
        section.finish("disk", &jobs, &summaries);
        Ok(section)
    }

    fn rss(&mut self) -> Result<Section> {
        if !self.tools.contains(&Tool::Rangefetch) {
            return Ok(skipped("rss", "rangefetch is not among --tools"));
        }
        let huge_size = self.options.sizes.huge;
        let log = self.log_dir.join("rss-testserver.log");
        let generated = ChildServer::test_server(
            self.testserver,
            huge_size,
            4,
            &[
                "--path".to_owned(),
                format!("/generated-{}.bin", format_size(huge_size)),
            ],
            &log,
        )?;
        let mut jobs = Vec::new();
        if let (Some(nginx), Some(mid)) = (self.nginx, self.mid) {
            let mut job = tool::job(
                Tool::Rangefetch,
                &Variant::default(),
                &nginx.fast(mid),
                &self.runner.download_dir,
                self.rangefetch,
                steady_timeout(mid.size),
            );
            job.label = format!("{} from nginx, unthrottled", format_size(mid.size));
            jobs.push(job);
        }
        let mut job = tool::job(
            Tool::Rangefetch,
            &Variant::default(),
            &generated.source,
            &self.runner.download_dir,
            self.rangefetch,
            steady_timeout(huge_size),
        );
        job.label = format!(
            "{} from rangefetch-testserver, unthrottled",
            format_size(huge_size)
        );
        jobs.push(job);
        let summaries = self.run_rounds("rss", &jobs)?;
        drop(generated);

        let mut section = Section::default();
        section
            .text
            .push_str("## rss: rangefetch's peak RSS at default flags\n\n");
        let mut table = Table::new([
            "file",
            "ok",
            "wall s, median",
            "peak RSS MiB, median",
            "peak RSS MiB, max",
            "CPU s",
            "served ÷ size, median (max)",
            "requests",
        ]);
        for (job, summary) in jobs.iter().zip(&summaries) {
            table.row(vec![
                job.label.clone(),
                format!("{}/{}", summary.ok, summary.runs),
                report::seconds(summary.median_wall()),
                report::mebibytes(summary.peak_rss_bytes),
                report::mebibytes(summary.peak_rss_max_bytes),
                report::seconds(summary.cpu),
                report::served_cell(summary, job.source.size),
                requests_cell(summary),
            ]);
            section.checks.push(Check {
                target: format!(
                    "rss: peak RSS at default flags, {} ≤ 32 MiB",
                    format_size(job.source.size)
                ),
                measured: format!(
                    "{} MiB (max of runs)",
                    report::mebibytes(summary.peak_rss_max_bytes)
                ),
                pass: summary
                    .peak_rss_max_bytes
                    .map(|peak| peak <= RSS_LIMIT_BYTES),
            });
        }
        section.text.push_str(&table.render());
        section.finish("rss", &jobs, &summaries);
        Ok(section)
    }

    fn sweep(&mut self) -> Result<Section> {
        let (Some(nginx), Some(big), Some(mid)) = (self.nginx, self.big, self.mid) else {
            return Ok(skipped("sweep", "nginx is not available"));
        };
        if !self.tools.contains(&Tool::Rangefetch) {
            return Ok(skipped("sweep", "rangefetch is not among --tools"));
        }
        let links = [
            (nginx.fast(big), "unthrottled nginx"),
            (
                nginx.slow(mid),
                "nginx with `limit_rate 20m` per connection",
            ),
        ];
        let mut jobs = Vec::new();
        for (source, _) in &links {
            for connections in SWEEP_CONNECTIONS {
                for chunk_size in SWEEP_CHUNK_SIZES {
                    let variant = Variant {
                        rangefetch_flags: vec![
                            "-c".to_owned(),
                            connections.to_string(),
                            "--chunk-size".to_owned(),
                            format_size(chunk_size),
                        ],
                        rangefetch_json: false,
                        flaky: false,
                    };
                    let mut job = tool::job(
                        Tool::Rangefetch,
                        &variant,
                        source,
                        &self.runner.download_dir,
                        self.rangefetch,
                        steady_timeout(source.size),
                    );
                    job.label =
                        format!("-c {connections} --chunk-size {}", format_size(chunk_size));
                    jobs.push(job);
                }
            }
        }
        let summaries = self.run_rounds("sweep", &jobs)?;
        let mut section = Section::default();
        section.text.push_str(
            "## sweep: rangefetch, connections × chunk size\n\n\
             Median wall seconds (MB/s) of download + verify.\n",
        );
        let per_link = SWEEP_CONNECTIONS.len() * SWEEP_CHUNK_SIZES.len();
        for (link_index, (source, description)) in links.iter().enumerate() {
            let _ = writeln!(
                section.text,
                "\n{} from {description}:\n",
                format_size(source.size)
            );
            let mut header = vec!["-c \\ --chunk-size".to_owned()];
            header.extend(SWEEP_CHUNK_SIZES.iter().map(|size| format_size(*size)));
            let mut table = Table::new(header);
            for (row_index, connections) in SWEEP_CONNECTIONS.iter().enumerate() {
                let mut cells = vec![connections.to_string()];
                for column in 0..SWEEP_CHUNK_SIZES.len() {
                    let index =
                        link_index * per_link + row_index * SWEEP_CHUNK_SIZES.len() + column;
                    let summary = &summaries[index];
                    cells.push(summary.median_wall().map_or_else(
                        || format!("failed ({}/{})", summary.ok, summary.runs),
                        |wall| {
                            format!(
                                "{:.2} ({:.0})",
                                wall.as_secs_f64(),
                                source.size as f64 / 1e6 / wall.as_secs_f64().max(1e-9)
                            )
                        },
                    ));
                }
                table.row(cells);
            }
            section.text.push_str(&table.render());
        }
        section.finish("sweep", &jobs, &summaries);
        Ok(section)
    }

    /// One job per available tool, rangefetch first.
    fn tool_jobs(&self, source: &Source, variant: &Variant, timeout: Duration) -> Vec<Job> {
        self.tools
            .iter()
            .map(|tool| {
                tool::job(
                    *tool,
                    variant,
                    source,
                    &self.runner.download_dir,
                    self.rangefetch,
                    timeout,
                )
            })
            .collect()
    }

    /// Warm-up rounds, then counted rounds; each round runs every job once.
    fn run_rounds(&mut self, scenario: &str, jobs: &[Job]) -> Result<Vec<Summary>> {
        let runner = self.runner;
        let runs = self.options.runs;
        self.run_rounds_with(scenario, jobs, runner, runs)
    }

    /// As `run_rounds`, with another runner (another download directory) and
    /// a count of counted rounds.
    fn run_rounds_with(
        &mut self,
        scenario: &str,
        jobs: &[Job],
        runner: &Runner,
        counted_runs: usize,
    ) -> Result<Vec<Summary>> {
        let log_path = self.log_dir.join(format!("{scenario}.log"));
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("cannot open {}", log_path.display()))?;
        let warmup = self.options.warmup;
        let rounds = warmup + counted_runs;
        let mut runs: Vec<Vec<Run>> = vec![Vec::new(); jobs.len()];
        for round in 0..rounds {
            let counted = round >= warmup;
            for step in 0..jobs.len() {
                let index = (round + step) % jobs.len();
                let job = &jobs[index];
                let run = runner.run(job, &mut log)?;
                let round_name = if counted {
                    format!("run {}/{counted_runs}", round - warmup + 1)
                } else {
                    "warm-up".to_owned()
                };
                let served = run.served.map_or_else(String::new, |served| {
                    format!(
                        "  served {:.3}× in {} requests",
                        served.bytes as f64 / job.source.size.max(1) as f64,
                        served.requests
                    )
                });
                eprintln!(
                    "{scenario:5} {round_name:9} {:45} {:7.2} s  {}{served}",
                    job.label,
                    run.wall.as_secs_f64(),
                    run.failure.as_deref().unwrap_or("ok")
                );
                self.record(scenario, job, round, counted, &run)?;
                if counted {
                    runs[index].push(run);
                }
            }
        }
        Ok(runs.iter().map(|runs| Summary::of(runs)).collect())
    }

    fn record(
        &mut self,
        scenario: &str,
        job: &Job,
        round: usize,
        counted: bool,
        run: &Run,
    ) -> Result<()> {
        let optional =
            |value: Option<f64>| value.map_or_else(String::new, |value| format!("{value:.3}"));
        let events = run.events.unwrap_or_default();
        let size = job.source.size;
        writeln!(
            self.csv,
            "{scenario},\"{}\",{round},{counted},{},{:.3},{},{},{},{},{},{size},{},{},{},\"{}\"",
            job.label,
            run.ok(),
            run.wall.as_secs_f64(),
            optional(run.resources.map(|resources| resources.cpu.as_secs_f64())),
            optional(
                run.resources
                    .map(|resources| resources.peak_rss_bytes as f64 / f64::from(1 << 20))
            ),
            optional(run.other_cpu.map(|other| other.as_secs_f64())),
            optional(events.last_byte_to_verified.map(|gap| gap.as_secs_f64())),
            events
                .retries
                .map_or_else(String::new, |retries| retries.to_string()),
            run.served
                .map_or_else(String::new, |served| served.bytes.to_string()),
            run.served.map_or_else(String::new, |served| format!(
                "{:.4}",
                served.bytes as f64 / size.max(1) as f64
            )),
            run.served
                .map_or_else(String::new, |served| served.requests.to_string()),
            run.failure.as_deref().unwrap_or("").replace('"', "'"),
        )
        .context("cannot write runs.csv")
    }

    /// The flaky link and the same server without cuts, both
    /// rangefetch-testserver.
    fn flaky_servers(&mut self) -> Result<FlakyServers> {
        let size = self.options.sizes.mid;
        let path = format!("/flaky-{}.bin", format_size(size));
        let flaky = ChildServer::test_server(
            self.testserver,
            size,
            7,
            &[
                TESTSERVER_CUT_FLAG.to_owned(),
                TESTSERVER_CUT_VALUE.to_owned(),
                "--path".to_owned(),
                path.clone(),
            ],
            &self.log_dir.join("flaky-testserver.log"),
        )?;
        let fault_free = ChildServer::test_server(
            self.testserver,
            size,
            7,
            &["--path".to_owned(), path],
            &self.log_dir.join("fault-free-testserver.log"),
        )?;
        Ok(FlakyServers {
            flaky,
            fault_free,
            description: format!(
                "rangefetch-testserver {TESTSERVER_CUT_FLAG} {TESTSERVER_CUT_VALUE} (FIN close)"
            ),
        })
    }
}

struct FlakyServers {
    flaky: ChildServer,
    fault_free: ChildServer,
    description: String,
}

impl Section {
    /// Failures and the exact command lines, after the tables.
    fn finish(&mut self, scenario: &str, jobs: &[Job], summaries: &[Summary]) {
        let failed: Vec<String> = jobs
            .iter()
            .zip(summaries)
            .filter(|(_, summary)| !summary.failures.is_empty())
            .map(|(job, summary)| format!("- {}: {}", job.label, summary.failures.join("; ")))
            .collect();
        if !failed.is_empty() {
            let _ = writeln!(
                self.text,
                "\nFailed runs (the tools' output is in logs/{scenario}*.log):\n{}",
                failed.join("\n")
            );
        }
        self.rangefetch_failures = jobs
            .iter()
            .zip(summaries)
            .filter(|(job, _)| job.tool == Some(Tool::Rangefetch))
            .map(|(_, summary)| summary.runs - summary.ok)
            .sum();
        let mut commands: Vec<String> = Vec::new();
        for job in jobs {
            let name = job.tool.map_or("reference", Tool::name);
            let line = format!("- {name}: `{}`", job.shown);
            if !commands.contains(&line) {
                commands.push(line);
            }
        }
        let _ = writeln!(self.text, "\nCommands:\n{}", commands.join("\n"));
    }
}

fn skipped(scenario: &str, why: &str) -> Section {
    eprintln!("{scenario}: skipped: {why}");
    Section {
        text: format!("## {scenario}\n\nSkipped: {why}.\n"),
        ..Section::default()
    }
}

/// The tool table of a scenario, ratios to the plain `rangefetch` row.
fn tool_table(jobs: &[Job], summaries: &[Summary]) -> String {
    let reference = reference_wall(jobs, summaries);
    let mut table = Table::new(report::TOOL_HEADER);
    for (job, summary) in jobs.iter().zip(summaries) {
        table.row(tool_row(&job.label, summary, job.source.size, reference));
    }
    table.render()
}

fn reference_summary<'a>(jobs: &[Job], summaries: &'a [Summary]) -> Option<&'a Summary> {
    jobs.iter()
        .zip(summaries)
        .find(|(job, _)| job.tool == Some(Tool::Rangefetch) && job.label == Tool::Rangefetch.name())
        .map(|(_, summary)| summary)
}

fn reference_wall(jobs: &[Job], summaries: &[Summary]) -> Option<Duration> {
    reference_summary(jobs, summaries).and_then(Summary::median_wall)
}

fn wall_of(tool: Tool, jobs: &[Job], summaries: &[Summary]) -> Option<Duration> {
    jobs.iter()
        .zip(summaries)
        .find(|(job, _)| job.tool == Some(tool))
        .and_then(|(_, summary)| summary.median_wall())
}

/// Issue 19's bound for a clean link at this size: ≤ 1.01 from 64 MiB up,
/// ≤ 1.03 below; on rangefetch's row, the largest run's ratio.
fn clean_served_check(scenario: &str, jobs: &[Job], summaries: &[Summary], size: u64) -> Check {
    let limit = if size >= SERVED_CLEAN_LARGE_FROM {
        SERVED_CLEAN_LARGE
    } else {
        SERVED_CLEAN_SMALL
    };
    served_check(
        &format!(
            "{scenario}: rangefetch bytes served ÷ size, {}, ≤ {limit:.2} (max of runs)",
            format_size(size)
        ),
        reference_summary(jobs, summaries),
        size,
        limit,
    )
}

fn served_check(target: &str, summary: Option<&Summary>, size: u64, limit: f64) -> Check {
    let (median, max) = summary.map_or((None, None), |summary| summary.served_ratio(size));
    Check {
        target: target.to_owned(),
        measured: match (median, max) {
            (Some(median), Some(max)) => format!("median {median:.3}, max {max:.3}"),
            _ => "not measured".to_owned(),
        },
        pass: max.map(|max| max <= limit),
    }
}

fn requests_cell(summary: &Summary) -> String {
    summary
        .requests
        .map_or_else(|| "–".to_owned(), |requests| requests.to_string())
}

/// Long enough for a single connection at 2 MB/s; a hung tool still ends.
fn steady_timeout(size: u64) -> Duration {
    Duration::from_secs(300).max(Duration::from_secs(size / 2_000_000))
}

/// Whether the sizes are the issue's, so the checks mean what the issue says.
pub fn issue_sizes(sizes: Sizes) -> bool {
    sizes == Sizes::ISSUE
}
