//! `get -i LIST`: many files under one connection budget. Twenty files verified with `-j 4
//! -c 8` and never more than eight requests at once at the server; an interrupted batch
//! resumes each file where it stopped and does not fetch the finished ones again; a bad hash
//! and a 404 fail alone, with the worst exit code and a summary naming both; a list on stdin;
//! a hostile list refused before any request.

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rangefetch_testserver::{Fault, FaultRule, FaultScript, FileSpec};

use crate::support::binary::{rangefetch, spawn_env};
use crate::support::{
    KIB, Run, WRONG_SHA256, journal_recorded, sha256_file, start_server, tempdir,
};

/// `n` files of 256 KiB to 1 MiB, `/f00.bin`, `/f01.bin`, … (seeded, so each its own bytes).
fn files(n: usize) -> Vec<FileSpec> {
    (0..n)
        .map(|idx| {
            let size = 256 * KIB + (idx as u64 % 4) * 256 * KIB + idx as u64;
            FileSpec::new(&format!("/f{idx:02}.bin"), size, 1000 + idx as u64)
        })
        .collect()
}

/// A list line per file: `HASH  URL`, every other one with an output path in `sub/`.
fn list_of(files: &[FileSpec], base: &dyn Fn(&str) -> String) -> String {
    let mut list = String::from("# rangefetch get -i\n\n");
    for (idx, file) in files.iter().enumerate() {
        list.push_str(&format!("{}  {}", file.sha256_hex(), base(&file.path)));
        if idx % 2 == 1 {
            list.push_str(&format!(" sub/{}", &file.path[1..]));
        }
        list.push('\n');
    }
    list
}

/// Where the list puts `file`.
fn output_of(dir: &Path, files: &[FileSpec], idx: usize) -> std::path::PathBuf {
    let name = &files[idx].path[1..];
    if idx % 2 == 1 {
        dir.join("sub").join(name)
    } else {
        dir.join(name)
    }
}

/// Every stdout line, parsed.
fn json_lines(run: &Run) -> Vec<serde_json::Value> {
    run.stdout
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not JSON ({e}): {line}\n{}", run.describe()))
        })
        .collect()
}

/// The summary's per-file results, by output path.
fn results_by_path(
    summary: &serde_json::Value,
) -> std::collections::HashMap<String, serde_json::Value> {
    summary["files"]
        .as_array()
        .unwrap_or_else(|| panic!("no `files` in the summary: {summary}"))
        .iter()
        .map(|file| {
            (
                file["path"].as_str().expect("a path").to_owned(),
                file.clone(),
            )
        })
        .collect()
}

#[test]
fn twenty_files_verified_under_one_budget_of_eight_connections() {
    let files = files(20);
    let server = start_server(files.clone(), vec![]);
    // 2 MiB/s per connection: each file wants more connections than its share, so the
    // budget, not the files, decides how many run at once.
    let relay = CountingRelay::start(server.addr().port(), 2 << 20);
    let dir = tempdir();
    std::fs::write(
        dir.path().join("list"),
        list_of(&files, &|path| relay.url(path)),
    )
    .expect("write the list");
    let args = [
        "get",
        "-i",
        "list",
        "-j",
        "4",
        "-c",
        "8",
        "--chunk-size",
        "64KiB",
        "--align",
        "0",
        "--json",
    ];
    let run = spawn_env(dir.path(), &args, None, &[]).wait();
    assert_eq!(run.code(), 0, "{}", run.describe());
    for idx in 0..files.len() {
        let out = output_of(dir.path(), &files, idx);
        assert_eq!(
            sha256_file(&out),
            files[idx].sha256_hex(),
            "{}",
            out.display()
        );
    }
    let lines = json_lines(&run);
    let summary = lines.last().expect("a done line");
    assert_eq!(
        (&summary["event"], &summary["ok"]),
        (&"done".into(), &true.into()),
        "{summary}"
    );
    let results = results_by_path(summary);
    assert_eq!(results.len(), 20, "{summary}");
    assert!(results.values().all(|r| r["verified"] == true), "{summary}");
    // Every event but the summary names its file: its line in the list (the list's first
    // two lines are a comment and a blank line).
    for line in &lines[..lines.len() - 1] {
        let file = line["file"]
            .as_u64()
            .unwrap_or_else(|| panic!("no file in {line}"));
        assert!((3..=22).contains(&file), "{line}");
        if line["event"] == "started" {
            let idx = usize::try_from(file - 3).expect("an index");
            let expected = output_of(Path::new(""), &files, idx);
            assert_eq!(line["path"], expected.to_string_lossy().as_ref(), "{line}");
        }
    }
    let (peak, aborted) = relay.peak_and_aborted();
    assert!(
        (1..=8).contains(&peak),
        "{peak} requests at once at the server with -c 8 ({aborted} cut short)"
    );
}

#[test]
fn max_per_host_caps_the_connections_to_one_host() {
    let files = files(6);
    let server = start_server(files.clone(), vec![]);
    let relay = CountingRelay::start(server.addr().port(), 2 << 20);
    let dir = tempdir();
    std::fs::write(
        dir.path().join("list"),
        list_of(&files, &|path| relay.url(path)),
    )
    .expect("write the list");
    let args = [
        "get",
        "-i",
        "list",
        "-j",
        "3",
        "-c",
        "8",
        "--max-per-host",
        "3",
        "--chunk-size",
        "64KiB",
        "--align",
        "0",
        "-q",
    ];
    let run = spawn_env(dir.path(), &args, None, &[]).wait();
    assert_eq!(run.code(), 0, "{}", run.describe());
    for idx in 0..files.len() {
        let out = output_of(dir.path(), &files, idx);
        assert_eq!(
            sha256_file(&out),
            files[idx].sha256_hex(),
            "{}",
            out.display()
        );
    }
    let (peak, aborted) = relay.peak_and_aborted();
    assert!(
        (1..=3).contains(&peak),
        "{peak} requests at once to one host with --max-per-host 3 ({aborted} cut short)"
    );
}

#[test]
fn an_interrupted_batch_resumes_and_does_not_fetch_finished_files_again() {
    let files = files(12);
    // 1 MiB/s per connection: long enough to stop the batch halfway.
    let server = start_server(
        files.clone(),
        vec![FaultRule::always(Fault::Throttle {
            bytes_per_sec: 1 << 20,
        })],
    );
    let dir = tempdir();
    std::fs::write(
        dir.path().join("list"),
        list_of(&files, &|path| server.url(path)),
    )
    .expect("write the list");
    let args = [
        "get",
        "-i",
        "list",
        "-j",
        "3",
        "-c",
        "6",
        "--chunk-size",
        "64KiB",
        "--align",
        "0",
        "--json",
    ];
    let mut running = spawn_env(dir.path(), &args, Some(&server), &[]);
    let finished = |idx: usize| output_of(dir.path(), &files, idx).is_file();
    let partial = |idx: usize| {
        let mut journal = output_of(dir.path(), &files, idx).into_os_string();
        journal.push(".part.state");
        !finished(idx) && journal_recorded(Path::new(&journal)) > 0
    };
    running.wait_until(
        "two finished files and one with a journal",
        Duration::from_secs(60),
        || (0..files.len()).filter(|&i| finished(i)).count() >= 2 && (0..files.len()).any(partial),
    );
    running.signal(libc::SIGINT);
    let first = running.wait();
    assert_eq!(first.code(), 130, "{}", first.describe());
    let summary = first.json_summary();
    assert_eq!(summary["exit_code"], 130, "{summary}");
    let done_before: Vec<usize> = (0..files.len()).filter(|&i| finished(i)).collect();
    let partial_before: Vec<usize> = (0..files.len()).filter(|&i| partial(i)).collect();
    assert!(!done_before.is_empty() && !partial_before.is_empty());
    assert!(
        first.stderr.contains("files failed") && first.stderr.contains("resume"),
        "{}",
        first.describe()
    );

    server.set_faults(FaultScript::default());
    let rerun = spawn_env(dir.path(), &args, Some(&server), &[]).wait();
    assert_eq!(rerun.code(), 0, "{}", rerun.describe());
    for idx in 0..files.len() {
        let out = output_of(dir.path(), &files, idx);
        assert_eq!(
            sha256_file(&out),
            files[idx].sha256_hex(),
            "{}",
            out.display()
        );
    }
    let requests = &rerun
        .served
        .as_ref()
        .expect("recorded against the server")
        .requests;
    let results = results_by_path(&rerun.json_summary());
    for &idx in &done_before {
        let path = &files[idx].path;
        let asked: Vec<_> = requests.iter().filter(|r| &r.path == path).collect();
        assert!(
            asked.is_empty(),
            "{path} was finished, yet fetched again: {asked:?}"
        );
        let result = &results[output_of(Path::new(""), &files, idx)
            .to_str()
            .expect("utf-8")];
        assert_eq!(result["already_present"], true, "{result}");
    }
    for &idx in &partial_before {
        let result = &results[output_of(Path::new(""), &files, idx)
            .to_str()
            .expect("utf-8")];
        assert!(
            result["resumed_bytes"].as_u64() > Some(0),
            "not resumed: {result}"
        );
    }
}

#[test]
fn a_bad_hash_and_a_404_fail_alone_with_the_worst_code_and_a_summary() {
    let files = files(6);
    let server = start_server(files.clone(), vec![]);
    let dir = tempdir();
    let mut list = String::new();
    for (idx, file) in files.iter().enumerate() {
        let hash = if idx == 2 {
            WRONG_SHA256.to_owned()
        } else {
            file.sha256_hex()
        };
        list.push_str(&format!("{hash}  {}\n", server.url(&file.path)));
    }
    list.push_str(&format!("{}\n", server.url("/missing.bin")));
    std::fs::write(dir.path().join("list"), list).expect("write the list");
    for json in [false, true] {
        let mut args = vec!["get", "-i", "list", "-j", "2", "-c", "4"];
        if json {
            args.push("--json");
            for idx in [0, 1, 3, 4, 5] {
                std::fs::remove_file(dir.path().join(&files[idx].path[1..])).expect("remove");
            }
        }
        let run = spawn_env(dir.path(), &args, None, &[]).wait();
        // Integrity outranks a download failure.
        assert_eq!(run.code(), 3, "{}", run.describe());
        for idx in [0, 1, 3, 4, 5] {
            let out = dir.path().join(&files[idx].path[1..]);
            assert_eq!(
                sha256_file(&out),
                files[idx].sha256_hex(),
                "{}",
                run.describe()
            );
        }
        assert!(!dir.path().join("f02.bin").exists() && !dir.path().join("missing.bin").exists());
        let stderr = &run.stderr;
        for needle in [
            "2 of 7 files failed",
            "failed: line 3 f02.bin",
            "failed: line 7 missing.bin",
            "404",
        ] {
            assert!(
                stderr.contains(needle),
                "no {needle:?} in\n{}",
                run.describe()
            );
        }
        if json {
            let summary = run.json_summary();
            assert_eq!(
                (&summary["ok"], &summary["exit_code"]),
                (&false.into(), &3.into()),
                "{summary}"
            );
            let results = results_by_path(&summary);
            assert_eq!(results.len(), 7, "{summary}");
            assert_eq!(results["f02.bin"]["class"], "integrity", "{summary}");
            assert_eq!(results["missing.bin"]["exit_code"], 1, "{summary}");
            assert_eq!(results["f00.bin"]["ok"], true, "{summary}");
        }
    }
}

#[test]
fn a_list_on_stdin() {
    let files = files(3);
    let server = start_server(files.clone(), vec![]);
    let dir = tempdir();
    let list = files
        .iter()
        .map(|file| format!("{}\r\n", server.url(&file.path)))
        .collect::<String>();
    let mut child = rangefetch()
        .args(["get", "-i", "-", "-j", "2", "-q"])
        .current_dir(dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn rangefetch");
    child
        .stdin
        .take()
        .expect("a stdin pipe")
        .write_all(list.as_bytes())
        .expect("write the list to stdin");
    let output = wait_with_deadline(child);
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    for file in &files {
        let name = &file.path[1..];
        assert_eq!(sha256_file(&dir.path().join(name)), file.sha256_hex());
        // Unverified, but hashed: `<hex>  <path>` per file, as `get` prints.
        assert!(
            stdout.contains(&format!("{}  {name}", file.sha256_hex())),
            "{stdout}"
        );
    }
}

#[test]
fn a_list_with_a_path_outside_the_directory_is_refused_before_any_request() {
    let server = start_server(files(1), vec![]);
    let dir = tempdir();
    let list = format!(
        "{}\n{} ../escape.bin\n",
        server.url("/f00.bin"),
        server.url("/f00.bin")
    );
    std::fs::write(dir.path().join("list"), list).expect("write the list");
    let run = spawn_env(
        dir.path(),
        &["get", "-i", "list", "--json"],
        Some(&server),
        &[],
    )
    .wait();
    assert_eq!(run.code(), 2, "{}", run.describe());
    assert!(
        run.stderr.contains("line 2") && run.stderr.contains(".."),
        "{}",
        run.describe()
    );
    assert_eq!(run.json_summary()["class"], "input");
    assert!(run.served.as_ref().expect("recorded").requests.is_empty());
}

fn wait_with_deadline(mut child: std::process::Child) -> std::process::Output {
    let until = Instant::now() + Duration::from_secs(120);
    while child.try_wait().expect("poll rangefetch").is_none() {
        if Instant::now() > until {
            let _ = child.kill();
            panic!("rangefetch did not finish within 120 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child
        .wait_with_output()
        .expect("collect rangefetch's output")
}

/// A loopback relay in front of the test server that counts requests in flight: from the
/// moment a request head passes to the moment its response's last byte does (its
/// `Content-Length` says when), or the connection closes. The count drops *before* the last
/// bytes are handed to the client, so a client that starts a new request once it has read a
/// response can never be counted twice. Each connection's responses are throttled, so that
/// requests overlap. Threads with a stop flag, joined on drop.
struct CountingRelay {
    port: u16,
    shared: Arc<RelayShared>,
    acceptor: Option<JoinHandle<()>>,
}

struct RelayShared {
    stop: AtomicBool,
    bytes_per_sec: u64,
    /// In flight now, the most at once, and requests cut short by a close.
    counts: Mutex<(usize, usize, usize)>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

/// One connection's request, if one is in flight.
struct InFlight(Mutex<bool>);

impl RelayShared {
    fn begin(&self, in_flight: &InFlight) {
        let mut flag = in_flight.0.lock().expect("in-flight flag");
        if !*flag {
            *flag = true;
            let mut counts = self.counts.lock().expect("counts");
            counts.0 += 1;
            counts.1 = counts.1.max(counts.0);
        }
    }

    fn end(&self, in_flight: &InFlight, aborted: bool) {
        let mut flag = in_flight.0.lock().expect("in-flight flag");
        if *flag {
            *flag = false;
            let mut counts = self.counts.lock().expect("counts");
            counts.0 -= 1;
            counts.2 += usize::from(aborted);
        }
    }
}

impl CountingRelay {
    fn start(target: u16, bytes_per_sec: u64) -> CountingRelay {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind the relay");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let port = listener.local_addr().expect("the relay's address").port();
        let shared = Arc::new(RelayShared {
            stop: AtomicBool::new(false),
            bytes_per_sec,
            counts: Mutex::new((0, 0, 0)),
            threads: Mutex::new(Vec::new()),
        });
        let acceptor = {
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || {
                while !shared.stop.load(Ordering::Relaxed) {
                    let client = match listener.accept() {
                        Ok((client, _)) => client,
                        Err(error) if error.kind() == ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(5));
                            continue;
                        }
                        Err(_) => continue,
                    };
                    let Ok(server) = TcpStream::connect((Ipv4Addr::LOCALHOST, target)) else {
                        continue;
                    };
                    let (Ok(client_reader), Ok(server_writer)) =
                        (client.try_clone(), server.try_clone())
                    else {
                        continue;
                    };
                    let in_flight = Arc::new(InFlight(Mutex::new(false)));
                    let up = {
                        let (shared, in_flight) = (Arc::clone(&shared), Arc::clone(&in_flight));
                        std::thread::spawn(move || {
                            upstream(client_reader, server_writer, &shared, &in_flight);
                        })
                    };
                    let down = {
                        let shared = Arc::clone(&shared);
                        std::thread::spawn(move || downstream(server, client, &shared, &in_flight))
                    };
                    shared.threads.lock().expect("threads").extend([up, down]);
                }
            })
        };
        CountingRelay {
            port,
            shared,
            acceptor: Some(acceptor),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The most requests in flight at once, and how many were cut short.
    fn peak_and_aborted(&self) -> (usize, usize) {
        let counts = self.shared.counts.lock().expect("counts");
        (counts.1, counts.2)
    }
}

impl Drop for CountingRelay {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        let threads = std::mem::take(&mut *self.shared.threads.lock().expect("threads"));
        for thread in threads {
            let _ = thread.join();
        }
    }
}

/// Client to server: a request is in flight once its head has passed (requests here have
/// no body). A client that closes ends the request it had in flight.
fn upstream(mut from: TcpStream, mut to: TcpStream, shared: &RelayShared, in_flight: &InFlight) {
    let _ = from.set_read_timeout(Some(Duration::from_millis(50)));
    let mut buf = [0u8; 16 * 1024];
    let mut head = Vec::new();
    while !shared.stop.load(Ordering::Relaxed) {
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(_) => break,
        };
        head.extend_from_slice(&buf[..n]);
        while let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            head.drain(..end + 4);
            shared.begin(in_flight);
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    shared.end(in_flight, true);
    let _ = to.shutdown(Shutdown::Both);
}

/// Server to client, throttled: follows each response's head and `Content-Length`, and ends
/// the request before the bytes that complete it are written.
fn downstream(mut from: TcpStream, mut to: TcpStream, shared: &RelayShared, in_flight: &InFlight) {
    let _ = from.set_read_timeout(Some(Duration::from_millis(50)));
    let mut buf = [0u8; 16 * 1024];
    let mut head: Vec<u8> = Vec::new();
    let mut body_left: Option<u64> = None;
    let started = Instant::now();
    let mut sent = 0u64;
    while !shared.stop.load(Ordering::Relaxed) {
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(_) => break,
        };
        let mut rest = &buf[..n];
        while !rest.is_empty() {
            match body_left {
                Some(left) => {
                    let take = usize::try_from(left).unwrap_or(usize::MAX).min(rest.len());
                    rest = &rest[take..];
                    body_left = Some(left - take as u64);
                }
                None => {
                    head.extend_from_slice(rest);
                    rest = &[];
                    if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                        let text = String::from_utf8_lossy(&head[..end]).to_ascii_lowercase();
                        let length = text
                            .lines()
                            .find_map(|line| line.strip_prefix("content-length:"))
                            .and_then(|value| value.trim().parse::<u64>().ok())
                            .unwrap_or(0);
                        let after: Vec<u8> = head[end + 4..].to_vec();
                        head.clear();
                        // The bytes after the head are body (or the next head): go round.
                        let take = usize::try_from(length)
                            .unwrap_or(usize::MAX)
                            .min(after.len());
                        body_left = Some(length - take as u64);
                        if after.len() > take {
                            head.extend_from_slice(&after[take..]);
                        }
                    }
                }
            }
            if body_left == Some(0) {
                body_left = None;
                shared.end(in_flight, false);
            }
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
        sent += n as u64;
        let due = started + Duration::from_secs_f64(sent as f64 / shared.bytes_per_sec as f64);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
    }
    shared.end(in_flight, true);
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}
