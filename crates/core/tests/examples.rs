//! Every example in `examples/` runs against the test server and does what its doc says:
//! `embed` (a background download with progress), `cancel_resume`, `batch` (several files
//! under one budget) and `headers` (a token and a User-Agent). `cargo test` and
//! `cargo nextest run` build the examples beside the test binaries; a missing one fails here
//! saying how to build it.

use std::path::PathBuf;
use std::process::{Command, Output};

use rangefetch_testserver::{Fault, FaultRule, FaultScript, FileSpec, ServerConfig, TestServer};

const MIB: u64 = 1 << 20;

/// `target/<profile>/examples/<name>`, found from this test binary's own path
/// (`target/<profile>/deps/examples-…`).
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("the test binary lives in target/<profile>/deps");
    let path = profile_dir.join("examples").join(name);
    assert!(
        path.is_file(),
        "example {name} is not built at {}: run the tests with `cargo test` or `cargo nextest run` \
         (both build the examples), or `cargo build -p rangefetch-core --examples`",
        path.display()
    );
    path
}

fn run(name: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let output = Command::new(example(name))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run the example");
    assert!(
        output.status.success(),
        "example {name} {args:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn embed_downloads_with_progress_and_verifies() {
    let file = FileSpec::new("/img.bin", 8 * MIB, 901);
    let server = TestServer::serve(file.clone());
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("img.bin");
    let output = run(
        "embed",
        &[
            &server.url("/img.bin"),
            out.to_str().expect("utf-8"),
            &file.sha256_hex(),
        ],
        &[],
    );
    assert!(
        stdout(&output).contains(&file.sha256_hex()),
        "{}",
        stdout(&output)
    );
    assert!(stdout(&output).contains("verified: true"));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("100%"),
        "no progress shown"
    );
}

#[test]
fn cancel_resume_cancels_half_way_and_fetches_only_the_rest() {
    let size = 16 * MIB;
    let file = FileSpec::new("/img.bin", size, 902);
    // Throttled, so that the cancel at half lands before the end.
    let server = TestServer::start(ServerConfig {
        files: vec![file.clone()],
        faults: FaultScript::new(vec![FaultRule::always(Fault::Throttle {
            bytes_per_sec: 8 * MIB,
        })]),
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("img.bin");
    let output = run(
        "cancel_resume",
        &[
            &server.url("/img.bin"),
            out.to_str().expect("utf-8"),
            &file.sha256_hex(),
        ],
        &[],
    );
    let text = stdout(&output);
    let kept: u64 = text
        .lines()
        .find_map(|line| line.strip_prefix("cancelled, kept "))
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no `cancelled, kept N bytes` line:\n{text}"));
    assert!(kept >= size / 2, "kept {kept} of {size}");
    assert!(text.contains(&format!("resumed {kept} bytes")), "{text}");
    assert!(text.contains(&file.sha256_hex()), "{text}");
    assert!(
        server.body_bytes_sent() < size + size / 4,
        "the two runs fetched {} bytes of a {size}-byte file",
        server.body_bytes_sent()
    );
}

#[test]
fn batch_fetches_every_file_and_gives_the_budget_back() {
    let files: Vec<FileSpec> = (0..5)
        .map(|i| FileSpec::new(&format!("/f{i}.bin"), 3 * MIB, 910 + i))
        .collect();
    let server = TestServer::start(ServerConfig {
        files: files.clone(),
        faults: FaultScript::default(),
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let mut args = vec![dir.path().to_str().expect("utf-8").to_owned()];
    args.extend(files.iter().map(|file| server.url(&file.path)));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let text = stdout(&run("batch", &args, &[]));
    for (index, file) in files.iter().enumerate() {
        assert!(
            text.contains(&format!("file {index}: {}", file.sha256_hex())),
            "file {index} missing or wrong:\n{text}"
        );
    }
    assert!(
        text.contains("5 files, 0 failed, budget free again: 8"),
        "{text}"
    );
}

#[test]
fn headers_sends_the_token_and_user_agent_and_never_prints_the_token() {
    let file = FileSpec::new("/private.bin", 2 * MIB, 920);
    let server = TestServer::serve(file.clone());
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("private.bin");
    let token = "tok-3f9a-never-shown";
    let output = run(
        "headers",
        &[&server.url("/private.bin"), out.to_str().expect("utf-8")],
        &[("REGISTRY_TOKEN", token)],
    );
    let requests = server.requests();
    assert!(!requests.is_empty());
    for request in &requests {
        assert_eq!(
            request.header("authorization"),
            Some(format!("Bearer {token}").as_str())
        );
        assert_eq!(
            request.header("user-agent"),
            Some("vm-manager/1.0 (rangefetch)")
        );
        assert_eq!(request.header("x-client"), Some("vm-manager"));
    }
    let printed = format!(
        "{}{}",
        stdout(&output),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!printed.contains(token), "{printed}");
    assert!(printed.contains(&file.sha256_hex()), "{printed}");
}
