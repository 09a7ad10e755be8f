//! A TCP relay on a loopback port in front of a real server: it throttles what the server
//! sends (per connection), so that a download is still running when a test interrupts it,
//! and it records the request heads that pass, for servers whose own log cannot show the
//! `Range` header (busybox httpd). Threads with a stop flag, joined on drop.

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// One request head that went through the relay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Relayed {
    /// Which accepted connection carried it: 0, 1, … in accept order.
    pub connection: u64,
    /// The method.
    pub method: String,
    /// The request target.
    pub target: String,
    /// The `Range` header, if any.
    pub range: Option<String>,
}

struct Shared {
    stop: AtomicBool,
    /// Bytes per second per connection from the server to the client; 0 is unlimited.
    rate: AtomicU64,
    /// Bytes relayed from servers to clients, over all connections.
    sent: AtomicU64,
    requests: Mutex<Vec<Relayed>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

/// A relay from a loopback port to `127.0.0.1:target`; see the module documentation.
pub struct Relay {
    port: u16,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl Relay {
    /// Relays to `127.0.0.1:target`, each connection's server-to-client bytes limited to
    /// `bytes_per_sec` (`None`: unlimited).
    pub fn start(target: u16, bytes_per_sec: Option<u64>) -> Relay {
        Self::farm(vec![target], bytes_per_sec)
    }

    /// A load balancer over `targets`: each new connection goes to the next one in turn, as
    /// a farm of identical backends behind one name.
    pub fn farm(targets: Vec<u16>, bytes_per_sec: Option<u64>) -> Relay {
        assert!(!targets.is_empty(), "a relay needs a target");
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind the relay");
        listener
            .set_nonblocking(true)
            .expect("make the relay's listener non-blocking");
        let port = listener.local_addr().expect("the relay's address").port();
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            rate: AtomicU64::new(bytes_per_sec.unwrap_or(0)),
            sent: AtomicU64::new(0),
            requests: Mutex::new(Vec::new()),
            threads: Mutex::new(Vec::new()),
        });
        let acceptor = {
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || accept_loop(&listener, &targets, &shared))
        };
        Relay {
            port,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// `http://127.0.0.1:PORT` followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Changes the limit for new and running connections (`None`: unlimited).
    pub fn set_rate(&self, bytes_per_sec: Option<u64>) {
        self.shared
            .rate
            .store(bytes_per_sec.unwrap_or(0), Ordering::Relaxed);
    }

    /// Bytes relayed from the servers to clients so far (heads included).
    pub fn bytes_sent(&self) -> u64 {
        self.shared.sent.load(Ordering::Relaxed)
    }

    /// Every request head so far, in arrival order.
    pub fn requests(&self) -> Vec<Relayed> {
        self.shared
            .requests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        let threads = std::mem::take(
            &mut *self
                .shared
                .threads
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for thread in threads {
            let _ = thread.join();
        }
    }
}

fn accept_loop(listener: &TcpListener, targets: &[u16], shared: &Arc<Shared>) {
    let mut connection = 0;
    while !shared.stop.load(Ordering::Relaxed) {
        let client = match listener.accept() {
            Ok((client, _)) => client,
            Err(error) if error.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
            Err(_) => continue,
        };
        let target = targets[usize::try_from(connection).unwrap_or(0) % targets.len()];
        let Ok(server) = TcpStream::connect((Ipv4Addr::LOCALHOST, target)) else {
            let _ = client.shutdown(Shutdown::Both);
            continue;
        };
        let (Ok(client_reader), Ok(server_writer)) = (client.try_clone(), server.try_clone())
        else {
            continue;
        };
        let id = connection;
        connection += 1;
        let upstream = {
            let shared = Arc::clone(shared);
            std::thread::spawn(move || copy_requests(client_reader, server_writer, id, &shared))
        };
        let downstream = {
            let shared = Arc::clone(shared);
            std::thread::spawn(move || copy_throttled(server, client, &shared))
        };
        let mut threads = shared
            .threads
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        threads.push(upstream);
        threads.push(downstream);
    }
}

/// Client to server, recording each request head (the requests here have no bodies).
fn copy_requests(mut from: TcpStream, mut to: TcpStream, connection: u64, shared: &Shared) {
    let _ = from.set_read_timeout(Some(Duration::from_millis(50)));
    let mut buf = [0u8; 16 * 1024];
    let mut head = Vec::new();
    while !shared.stop.load(Ordering::Relaxed) {
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                continue;
            }
            Err(_) => break,
        };
        head.extend_from_slice(&buf[..n]);
        while let Some(end) = head.windows(4).position(|window| window == b"\r\n\r\n") {
            let text = String::from_utf8_lossy(&head[..end]).into_owned();
            head.drain(..end + 4);
            if let Some(request) = parse_head(&text, connection) {
                shared
                    .requests
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(request);
            }
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

fn parse_head(text: &str, connection: u64) -> Option<Relayed> {
    let mut lines = text.lines();
    let mut request_line = lines.next()?.split_whitespace();
    let method = request_line.next()?.to_owned();
    let target = request_line.next()?.to_owned();
    let range = lines.find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("range")
            .then(|| value.trim().to_owned())
    });
    Some(Relayed {
        connection,
        method,
        target,
        range,
    })
}

/// Server to client, at most the shared rate per second.
fn copy_throttled(mut from: TcpStream, mut to: TcpStream, shared: &Shared) {
    let _ = from.set_read_timeout(Some(Duration::from_millis(50)));
    let mut buf = [0u8; 16 * 1024];
    let started = Instant::now();
    let mut sent: u64 = 0;
    let mut rate_seen = shared.rate.load(Ordering::Relaxed);
    let mut since = (started, 0u64);
    while !shared.stop.load(Ordering::Relaxed) {
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                continue;
            }
            Err(_) => break,
        };
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
        sent += n as u64;
        shared.sent.fetch_add(n as u64, Ordering::Relaxed);
        let rate = shared.rate.load(Ordering::Relaxed);
        if rate != rate_seen {
            rate_seen = rate;
            since = (Instant::now(), sent);
        }
        if rate > 0 {
            // Sleep until the bytes sent since the rate was set are due.
            let due = since.0 + Duration::from_secs_f64((sent - since.1) as f64 / rate as f64);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}
