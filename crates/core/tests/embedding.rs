//! The engine as a VM manager embeds it: a configuration built in one expression whose
//! one-by-one settings survive `.config()`, a last progress event that reaches the total, a
//! cancelled run that says how much it kept and resumes from it, re-hashing an existing
//! output with progress, and a batch of downloads under one connection budget.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rangefetch_core::{
    CancelToken, Config, ConnectionBudget, Download, ErrorKind, Event, Sha256Hex,
};
use rangefetch_testserver::{Fault, FaultRule, FaultScript, FileSpec, ServerConfig, TestServer};

const MIB: u64 = 1 << 20;

fn server(files: Vec<FileSpec>, rules: Vec<FaultRule>) -> TestServer {
    TestServer::start(ServerConfig {
        files,
        faults: FaultScript::new(rules),
    })
}

fn hash(file: &FileSpec) -> Sha256Hex {
    Sha256Hex::parse(&file.sha256_hex()).expect("hex")
}

/// Collects every event of a download.
fn recorder() -> (
    Arc<Mutex<Vec<Event>>>,
    impl Fn(Event) + Send + Sync + 'static,
) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&events);
    (events, move |event| {
        sink.lock().expect("events").push(event);
    })
}

fn last_progress(events: &[Event]) -> Option<(u64, Option<u64>)> {
    events.iter().rev().find_map(|event| match event {
        Event::Progress { bytes, total, .. } => Some((*bytes, *total)),
        _ => None,
    })
}

#[tokio::test]
async fn settings_made_one_by_one_survive_config_in_either_order() {
    let file = FileSpec::new("/a.bin", 4 * MIB, 801);
    let server = server(vec![file.clone()], vec![]);
    let dir = tempfile::tempdir().expect("tempdir");
    // One connection, set before .config() with a config asking for 16: one must win.
    let config = Config::default()
        .connections(16)
        .start_connections(16)
        .chunk_size(MIB)
        .stall_timeout(Duration::from_secs(30));
    let download = Download::builder(server.url("/a.bin"))
        .connections(1)
        .config(config)
        .output(dir.path().join("a.bin"))
        .sha256(hash(&file))
        .build()
        .expect("build");
    let outcome = download.run().await.expect("download");
    assert_eq!(
        outcome.connections, 1,
        "`.config()` undid `.connections(1)`"
    );
    // And the other way round: a setter after `.config()` wins too.
    let download = Download::builder(server.url("/a.bin"))
        .config(Config::default().connections(1))
        .connections(3)
        .output(dir.path().join("b.bin"))
        .build()
        .expect("build");
    assert_eq!(
        download.config().connections,
        3,
        "a setter after `.config()` lost"
    );
    let shown = format!(
        "{:?}",
        Config::default().header("Authorization", "Bearer x")
    );
    assert!(
        shown.contains("Authorization") && !shown.contains("Bearer x"),
        "{shown}"
    );
}

#[tokio::test]
async fn the_last_progress_event_reaches_the_total() {
    let file = FileSpec::new("/p.bin", 8 * MIB, 802);
    let server = server(vec![file.clone()], vec![]);
    let dir = tempfile::tempdir().expect("tempdir");
    let (events, sink) = recorder();
    Download::builder(server.url("/p.bin"))
        .chunk_size(MIB)
        .output(dir.path().join("p.bin"))
        .on_event(sink)
        .build()
        .expect("build")
        .run()
        .await
        .expect("download");
    let events = events.lock().expect("events");
    assert_eq!(last_progress(&events), Some((8 * MIB, Some(8 * MIB))));
}

#[tokio::test]
async fn a_cancelled_run_says_what_it_kept_and_the_next_resumes_from_it() {
    let file = FileSpec::new("/c.bin", 16 * MIB, 803);
    let server = server(
        vec![file.clone()],
        vec![FaultRule::always(Fault::Throttle {
            bytes_per_sec: 4 * MIB,
        })],
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("c.bin");
    let token = CancelToken::new();
    let (events, sink) = recorder();
    let seen = Arc::clone(&events);
    let canceller = token.clone();
    // Cancel once 3 MiB have arrived: driven by the download's own progress, not a clock.
    let watch = tokio::spawn(async move {
        loop {
            let bytes = last_progress(&seen.lock().expect("events")).map_or(0, |(b, _)| b);
            if bytes >= 3 * MIB {
                canceller.cancel();
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let error = Download::builder(server.url("/c.bin"))
        .chunk_size(MIB)
        .output(&out)
        .cancel_token(token.clone())
        .on_event(sink)
        .build()
        .expect("build")
        .run()
        .await
        .expect_err("cancelled");
    watch.await.expect("watcher");
    assert_eq!(error.kind(), ErrorKind::Cancelled);
    let kept = error
        .kept_bytes()
        .expect("a cancelled download says what it kept");
    assert!((3 * MIB..16 * MIB).contains(&kept), "kept {kept}");
    let last = last_progress(&events.lock().expect("events")).expect("progress");
    assert_eq!(
        last.0, kept,
        "the last progress event is not the bytes kept"
    );
    // The token is one-shot: a new run takes a new one, and resumes.
    server.set_faults(FaultScript::default());
    let outcome = Download::builder(server.url("/c.bin"))
        .chunk_size(MIB)
        .output(&out)
        .sha256(hash(&file))
        .build()
        .expect("build")
        .run()
        .await
        .expect("resumed download");
    assert_eq!(
        outcome.resumed_bytes, kept,
        "the resume did not start from what was kept"
    );
}

#[tokio::test]
async fn re_hashing_an_existing_output_reports_progress() {
    let file = FileSpec::new("/r.bin", 24 * MIB, 804);
    let server = server(vec![file.clone()], vec![]);
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("r.bin");
    let get = |sink: Option<Box<dyn Fn(Event) + Send + Sync>>| {
        let mut builder = Download::builder(server.url("/r.bin"))
            .output(&out)
            .sha256(hash(&file));
        if let Some(sink) = sink {
            builder = builder.on_event(sink);
        }
        builder.build().expect("build")
    };
    get(None).run().await.expect("first download");
    let requests = server.requests().len();
    let (events, sink) = recorder();
    let outcome = get(Some(Box::new(sink))).run().await.expect("second run");
    assert!(outcome.already_present);
    assert_eq!(server.requests().len(), requests, "the second run fetched");
    let events = events.lock().expect("events");
    assert_eq!(
        last_progress(&events),
        Some((24 * MIB, Some(24 * MIB))),
        "re-hashing reported no progress reaching the size: {events:?}"
    );
}

#[tokio::test]
async fn a_batch_under_one_budget_never_holds_more_connections_than_it() {
    // Six files, each allowed 4 connections, under a budget of 3 in total: the server never
    // sees more than 3 connections carrying a body at once.
    let files: Vec<FileSpec> = (0..6)
        .map(|i| FileSpec::new(&format!("/f{i}.bin"), 4 * MIB, 810 + i))
        .collect();
    let server = server(
        files.clone(),
        vec![FaultRule::always(Fault::Throttle {
            bytes_per_sec: 8 * MIB,
        })],
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let budget = ConnectionBudget::new(3, 3);
    let config = Config::default()
        .connections(4)
        .start_connections(4)
        .chunk_size(MIB)
        .budget(budget.clone());
    let mut runs = tokio::task::JoinSet::new();
    for file in &files {
        let download = Download::builder(server.url(&file.path))
            .config(config.clone())
            .output(dir.path().join(file.path.trim_start_matches('/')))
            .sha256(hash(file))
            .build()
            .expect("build");
        runs.spawn(async move { download.run().await });
    }
    let mut peak_in_use = 0;
    let mut done = 0;
    while done < files.len() {
        tokio::select! {
            joined = runs.join_next() => {
                joined.expect("a run").expect("task").expect("download");
                done += 1;
            }
            () = tokio::time::sleep(Duration::from_millis(5)) => {
                peak_in_use = peak_in_use.max(budget.total() - budget.available());
            }
        }
    }
    assert!(
        peak_in_use >= 2,
        "the budget was never shared: peak {peak_in_use}"
    );
    assert!(
        peak_in_use <= 3,
        "peak {peak_in_use} connections over a budget of 3"
    );
    assert_eq!(budget.available(), 3, "a permit was not given back");
}
