//! `rangefetch-testserver`: serves one seeded file on loopback until killed, for demos and for
//! trying real clients by hand. It prints `URL=... SHA256=... SIZE=...` once it is ready.

use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;

use rangefetch_testserver::{Fault, FaultRule, FaultScript, FileSpec, ServerConfig, TestServer};

const USAGE: &str = "\
usage: rangefetch-testserver --size SIZE [--seed N] [--port PORT] [--path /img.bin]
                             [--flaky] [--throttle RATE] [--cut MIN-MAX] [--no-ranges]

  --size SIZE      file size, e.g. 1GiB, 500MB, 4096 (required)
  --seed N         content seed (default 1)
  --port PORT      loopback port (default 0: any free port)
  --path PATH      URL path of the file (default /img.bin)
  --flaky          throttle each connection to 25MiB/s and cut responses at random
                   after 2-24MiB, so clients must retry
  --throttle RATE  per-connection rate in bytes per second, e.g. 20MiB
  --cut MIN-MAX    close every response after a random count of body bytes in
                   [MIN, MAX), e.g. 5MB-50MB (overrides --flaky's interval)
  --no-ranges      ignore Range and omit Accept-Ranges

Prints one line `URL=... SHA256=... SIZE=...`, then serves until SIGTERM or Ctrl-C.
Each line read on stdin is answered on stdout with `SENT=<body bytes> REQUESTS=<n>`:
the server's own count of file bytes written to sockets and of requests so far.";

/// The `--flaky` link's per-connection rate: 8 connections move a GiB in about five seconds.
const FLAKY_BYTES_PER_SEC: u64 = 25 << 20;
/// The `--flaky` cut interval: about a quarter of 8 MiB range responses are cut, so a GiB sees
/// dozens of retries that each resume where the cut happened.
const FLAKY_CUT: std::ops::Range<u64> = (2 << 20)..(24 << 20);

/// The command line, parsed.
#[derive(Debug, PartialEq)]
struct Args {
    size: u64,
    seed: u64,
    port: u16,
    path: String,
    flaky: bool,
    throttle: Option<u64>,
    cut: Option<std::ops::Range<u64>>,
    ranges: bool,
}

/// What the command line asks for.
#[derive(Debug, PartialEq)]
enum Command {
    Serve(Args),
    Help,
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(Command::Serve(args)) => args,
        Ok(Command::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("rangefetch-testserver: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match serve(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("rangefetch-testserver: {error}");
            ExitCode::FAILURE
        }
    }
}

fn serve(args: &Args) -> std::io::Result<()> {
    let mut file = FileSpec::new(&args.path, args.size, args.seed);
    file.accept_ranges = args.ranges;
    let mut rules = Vec::new();
    // An explicit --throttle also sets the pace of a --flaky link.
    let rate = args.throttle.or(args.flaky.then_some(FLAKY_BYTES_PER_SEC));
    if let Some(bytes_per_sec) = rate {
        rules.push(FaultRule::always(Fault::Throttle { bytes_per_sec }));
    }
    let cut = args.cut.clone().or(args.flaky.then_some(FLAKY_CUT));
    if let Some(cut) = cut {
        rules.push(FaultRule::always(Fault::CutRandom {
            min: cut.start,
            max: cut.end,
        }));
    }
    let config = ServerConfig {
        files: vec![file.clone()],
        faults: FaultScript::new(rules).with_seed(args.seed),
    };
    let server = TestServer::bind(config, SocketAddr::from((Ipv4Addr::LOCALHOST, args.port)))?;
    let sha256 = file.sha256_hex();
    let mut stdout = std::io::stdout().lock();
    writeln!(
        stdout,
        "URL={} SHA256={sha256} SIZE={}",
        server.url(&args.path),
        args.size
    )?;
    // Whoever reads this line (a script, the demo) waits for it before starting the client.
    stdout.flush()?;
    drop(stdout);
    wait_for_termination(&server)?;
    drop(server);
    Ok(())
}

/// Blocks until SIGTERM or Ctrl-C, so that the server shuts down cleanly and the exit status
/// is 0; meanwhile answers each line on stdin with the served counts (a benchmark asks for
/// them before and after each run).
fn wait_for_termination(server: &TestServer) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (asked, mut questions) = tokio::sync::mpsc::unbounded_channel::<()>();
    // A blocking read of stdin on a thread of its own; it ends at EOF (stdin from /dev/null)
    // or with the process.
    std::thread::spawn(move || {
        for _ in std::io::stdin().lines().map_while(Result::ok) {
            if asked.send(()).is_err() {
                return;
            }
        }
    });
    runtime.block_on(async {
        #[cfg(unix)]
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        loop {
            #[cfg(unix)]
            let terminated = terminate.recv();
            #[cfg(not(unix))]
            let terminated = std::future::pending::<Option<()>>();
            tokio::select! {
                interrupted = tokio::signal::ctrl_c() => return interrupted,
                _ = terminated => return Ok(()),
                Some(()) = questions.recv() => {
                    let mut stdout = std::io::stdout().lock();
                    writeln!(
                        stdout,
                        "SENT={} REQUESTS={}",
                        server.body_bytes_sent(),
                        server.requests().len()
                    )?;
                    stdout.flush()?;
                }
            }
        }
    })
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Command, String> {
    let mut size = None;
    let mut parsed = Args {
        size: 0,
        seed: 1,
        port: 0,
        path: "/img.bin".to_owned(),
        flaky: false,
        throttle: None,
        cut: None,
        ranges: true,
    };
    while let Some(arg) = args.next() {
        // Both `--flag value` and `--flag=value` are accepted.
        let (flag, inline_value) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => {
                (flag.to_owned(), Some(value.to_owned()))
            }
            _ => (arg.clone(), None),
        };
        let mut value = || {
            inline_value
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "--size" => size = Some(parse_size(&value()?)?),
            "--seed" => parsed.seed = parse_number(&flag, &value()?)?,
            "--port" => parsed.port = parse_number(&flag, &value()?)?,
            "--path" => {
                let path = value()?;
                if !path.starts_with('/') {
                    return Err(format!("--path must start with '/', got {path:?}"));
                }
                parsed.path = path;
            }
            "--throttle" => parsed.throttle = Some(parse_size(&value()?)?),
            "--flaky" => parsed.flaky = true,
            "--cut" => {
                let text = value()?;
                let (min, max) = text
                    .split_once('-')
                    .ok_or_else(|| format!("--cut wants MIN-MAX, got {text:?}"))?;
                let (min, max) = (parse_size(min)?, parse_size(max)?);
                if min >= max {
                    return Err(format!("--cut: {min} is not below {max}"));
                }
                parsed.cut = Some(min..max);
            }
            "--no-ranges" => parsed.ranges = false,
            _ => return Err(format!("unknown argument {arg:?}")),
        }
    }
    parsed.size = size.ok_or("--size is required")?;
    Ok(Command::Serve(parsed))
}

fn parse_number<T: std::str::FromStr>(flag: &str, text: &str) -> Result<T, String> {
    text.parse()
        .map_err(|_| format!("{flag}: {text:?} is not a valid number"))
}

/// A byte count with an optional unit: `B`, decimal `KB MB GB TB`, binary `KiB MiB GiB TiB`
/// (also written `K M G T`), case-insensitive.
fn parse_size(text: &str) -> Result<u64, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let number: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a size like 1GiB or 4096"))?;
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        _ => return Err(format!("{text:?} has an unknown unit {unit:?}")),
    };
    number
        .checked_mul(multiplier)
        .ok_or_else(|| format!("{text:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<Command, String> {
        parse_args(line.split_whitespace().map(str::to_owned))
    }

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("20MiB"), Ok(20 << 20));
        assert_eq!(parse_size("500MB"), Ok(500_000_000));
        assert_eq!(parse_size("3k"), Ok(3072));
        assert!(parse_size("GiB").is_err());
        assert!(parse_size("1.5GiB").is_err());
        assert!(parse_size("1XB").is_err());
        assert!(parse_size("99999999999TiB").is_err());
    }

    #[test]
    fn arguments_parse() {
        let Ok(Command::Serve(args)) = parse(
            "--size 1GiB --seed=7 --port 8080 --path /a.bin --flaky --throttle 20MiB --no-ranges",
        ) else {
            panic!("expected a serve command");
        };
        assert_eq!(
            args,
            Args {
                size: 1 << 30,
                seed: 7,
                port: 8080,
                path: "/a.bin".to_owned(),
                flaky: true,
                throttle: Some(20 << 20),
                cut: None,
                ranges: false,
            }
        );
        let Ok(Command::Serve(args)) = parse("--size 1GiB --cut 5MB-50MB") else {
            panic!("expected a serve command");
        };
        assert_eq!(args.cut, Some(5_000_000..50_000_000));
        assert!(parse("--size 1 --cut 5MB").is_err());
        assert!(parse("--size 1 --cut 50MB-5MB").is_err());
        assert_eq!(parse("--help"), Ok(Command::Help));
        assert!(parse("").is_err(), "size is required");
        assert!(parse("--size").is_err());
        assert!(parse("--size 1 --bogus").is_err());
        assert!(parse("--size 1 --path nope").is_err());
        assert!(parse("--size 1 --port 70000").is_err());
    }
}
