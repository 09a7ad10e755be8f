//! Python's `http.server` (the stock `SimpleHTTPRequestHandler`, with only its log line
//! changed to show the `Range` header), which ignores ranges: the download is one stream, said
//! in one notice; an interrupted run says that nothing can be resumed, and the rerun starts
//! from the beginning; a mirror is not asked for anything, since no plan is split.

use std::path::Path;
use std::time::Duration;

use crate::support::relay::Relay;
use crate::support::servers::{AccessLog, Daemon, DaemonSpec, gets_of, served_root};
use crate::support::{Expect, MIB, Scenario, tempdir, with_suffix};

use super::{SLOW, resumed_bytes};

/// The stock handler; only `log_request` writes `STATUS METHOD PATH "RANGE" -` to a file.
const SERVER: &str = r#"
import functools, http.server, sys
port, root, log = int(sys.argv[1]), sys.argv[2], open(sys.argv[3], "a", buffering=1)
class Handler(http.server.SimpleHTTPRequestHandler):
    def log_request(self, code="-", size="-"):
        log.write('%s %s %s "%s" %s\n' % (int(code), self.command, self.path.split("?")[0],
                                          self.headers.get("Range", "-"), size))
handler = functools.partial(Handler, directory=root)
http.server.ThreadingHTTPServer(("127.0.0.1", port), handler).serve_forever()
"#;

fn python(root: &Path) -> Daemon {
    let root = root.display().to_string();
    Daemon::start(&DaemonSpec {
        program: "python3",
        package: "python3",
        configure: &move |dir, port| {
            std::fs::write(dir.join("server.py"), SERVER).expect("write server.py");
            vec![
                dir.join("server.py").display().to_string(),
                port.to_string(),
                root.clone(),
                dir.join("access.log").display().to_string(),
            ]
        },
        env: Vec::new(),
        log: None,
    })
}

fn log(server: &Daemon) -> AccessLog {
    server.log("access.log")
}

#[test]
fn fresh_download_is_one_stream_and_says_so() {
    let size = 8 * MIB;
    let (root, sha256) = served_root("img.bin", size, 1451);
    let server = python(root.path());
    let run = Scenario::url(server.url("/img.bin"))
        .args(&["--sha256", &sha256, "--chunk-size", "1MiB"])
        .expect(Expect::success(&sha256).stderr_has("does not serve byte ranges"));
    assert_eq!(
        run.stderr.matches("does not serve byte ranges").count(),
        1,
        "said once\n{}",
        run.describe()
    );
    let entries = log(&server).since(0);
    let gets = gets_of(&entries, "/img.bin");
    // The probe asked for a range, got the whole file, and that response was the stream.
    assert_eq!(gets.len(), 1, "{}", log(&server).text());
    assert_eq!(gets[0].status, 200);
    assert_eq!(gets[0].range.as_deref(), Some("bytes=0-1048575"));
}

#[test]
fn an_interrupt_says_nothing_can_be_resumed_and_the_rerun_starts_over() {
    let size = 8 * MIB;
    let (root, sha256) = served_root("img.bin", size, 1452);
    let server = python(root.path());
    let relay = Relay::start(server.port(), Some(SLOW));
    let dir = tempdir();
    let args = ["--sha256", &sha256, "--json"];
    let mut running = Scenario::url(relay.url("/img.bin"))
        .in_dir(dir.path())
        .args(&args)
        .spawn();
    running.wait_until("a quarter of the file", Duration::from_secs(30), || {
        relay.bytes_sent() >= size / 4
    });
    running.signal(libc::SIGINT);
    let first = running.expect(
        Expect::failure(130)
            .hint()
            .stderr_has("nothing can be resumed"),
    );
    assert!(
        !first.stderr.contains("to resume"),
        "the hint promises a resume\n{}",
        first.describe()
    );
    assert!(
        !with_suffix(&first.out, ".part.state").exists(),
        "a journal for a single stream\n{}",
        first.describe()
    );
    relay.set_rate(None);
    let mark = log(&server).since(0).len();
    let second = Scenario::url(relay.url("/img.bin"))
        .in_dir(dir.path())
        .args(&args)
        .expect(Expect::success(&sha256).json());
    assert_eq!(resumed_bytes(&second), 0, "\n{}", second.describe());
    let entries = log(&server).since(mark);
    let gets = gets_of(&entries, "/img.bin");
    assert_eq!(gets.len(), 1, "{}", log(&server).text());
    assert_eq!(gets[0].status, 200);
}

#[test]
fn a_mirror_of_a_server_without_ranges_is_not_asked() {
    let size = 8 * MIB;
    let (root, sha256) = served_root("img.bin", size, 1453);
    let (first, second) = (python(root.path()), python(root.path()));
    Scenario::url(first.url("/img.bin"))
        .args(&[&second.url("/img.bin"), "--sha256", &sha256])
        .expect(Expect::success(&sha256));
    assert_eq!(gets_of(&log(&first).since(0), "/img.bin").len(), 1);
    assert!(
        log(&second).entries().is_empty(),
        "a mirror of a single stream was asked:\n{}",
        log(&second).text()
    );
}
