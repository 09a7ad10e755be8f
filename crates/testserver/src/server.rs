//! The server at work: a thread running its own tokio runtime, the accept loop, and one task
//! per connection that reads requests and streams responses with their faults applied.

use std::any::Any;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::{JoinError, JoinSet};

use crate::fault::{ChangeTrigger, CutKind, FaultScript, FaultState, HeadDelay, RequestFacts};
use crate::http::{self, HeadError, RangeHeader, RequestHead};
use crate::respond::{self, Body, FileBody, Plan, RequestView};
use crate::throttle::TokenBucket;
use crate::{FileSpec, RequestLog, ServerConfig};

/// Body bytes generated and written per write call: large enough that syscalls are not the
/// bottleneck at GB/s, small enough to keep per-connection memory and cut precision modest.
const PIECE: usize = 64 * 1024;

/// How far `ChangeContent` moves `Last-Modified`, so a date `If-Range` sees the change too.
const CHANGE_MODIFIED_STEP: Duration = Duration::from_secs(3600);

/// Locks a mutex even if a panicking thread poisoned it: the data is plain bookkeeping that
/// stays consistent, and the panic itself is re-raised when the server drops.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// State shared between the `TestServer` handle and the connection tasks.
///
/// Lock order, where several are held: `faults`, then `files`, then `log`.
pub(crate) struct Shared {
    pub files: Mutex<HashMap<String, FileSpec>>,
    pub faults: Mutex<FaultState>,
    pub log: Mutex<Vec<RequestLog>>,
    pub body_bytes_sent: AtomicU64,
    next_connection_id: AtomicU64,
    /// The first panic of a connection task, re-raised by the server thread at shutdown.
    panic: Mutex<Option<Box<dyn Any + Send>>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("files", &self.files)
            .field("body_bytes_sent", &self.body_bytes_sent)
            .finish_non_exhaustive()
    }
}

/// What `Shared::prepare` decided for one request.
struct Prepared {
    plan: Plan,
    log_index: usize,
    served: Arc<AtomicU64>,
    changes: Vec<ChangeTrigger>,
}

impl Shared {
    pub(crate) fn new(config: ServerConfig) -> Self {
        let files = config
            .files
            .into_iter()
            .map(|file| (file.path.clone(), file))
            .collect();
        Self {
            files: Mutex::new(files),
            faults: Mutex::new(FaultState::new(config.faults, 0)),
            log: Mutex::new(Vec::new()),
            body_bytes_sent: AtomicU64::new(0),
            next_connection_id: AtomicU64::new(0),
            panic: Mutex::new(None),
        }
    }

    pub(crate) fn set_faults(&self, script: FaultScript) {
        let connection_base = self.next_connection_id.load(Ordering::SeqCst);
        lock(&self.faults).replace(script, connection_base);
    }

    /// Evaluates the faults, picks the file version and the response, and logs the request.
    ///
    /// All of it happens under the faults lock so that the log's order is the order in which
    /// rules counted the requests; that includes compressing a `Gzip` body, which is why those
    /// are meant for small files.
    fn prepare(&self, head: &RequestHead, connection_id: u64) -> Prepared {
        let mut faults = lock(&self.faults);
        let size = lock(&self.files).get(&head.path).map(|file| file.size);
        let range_start = match head.header("range").map(http::parse_range) {
            Some(RangeHeader::Single(spec)) => spec.start(size),
            _ => None,
        };
        let effects = faults.evaluate(&RequestFacts {
            method: &head.method,
            path: &head.path,
            range_start,
            connection_id,
            no_cache: ["cache-control", "pragma"].iter().any(|name| {
                head.header(name)
                    .is_some_and(|value| value.to_ascii_lowercase().contains("no-cache"))
            }),
        });
        // A change whose threshold was already reached takes effect before this response is
        // chosen: this request arrived after the switch.
        let served_so_far = effects.served.load(Ordering::Relaxed);
        for trigger in &effects.changes {
            if served_so_far >= trigger.after_bytes_served && faults.claim_change(trigger) {
                self.apply_change(&head.path, trigger);
            }
        }
        let file = lock(&self.files).get(&head.path).cloned();
        let request = RequestView {
            method: &head.method,
            range: head.header("range"),
            if_range: head.header("if-range"),
            close_requested: head.wants_close(),
            http_1_0: head.minor_version == 0,
        };
        let plan = respond::decide(&request, file.as_ref(), &effects);
        let mut log = lock(&self.log);
        log.push(RequestLog {
            method: head.method.clone(),
            path: head.path.clone(),
            target: head.target.clone(),
            headers: head.headers.clone(),
            range: head.header("range").map(str::to_owned),
            if_range: head.header("if-range").map(str::to_owned),
            status: plan.status,
            body_bytes: 0,
            connection_id,
            faults: effects.matched,
        });
        Prepared {
            plan,
            log_index: log.len() - 1,
            served: effects.served,
            changes: effects.changes,
        }
    }

    /// Logs a request that could not be parsed, with what little is known of it.
    fn log_rejected(&self, connection_id: u64, status: u16) {
        lock(&self.log).push(RequestLog {
            method: String::new(),
            path: String::new(),
            target: String::new(),
            headers: Vec::new(),
            range: None,
            if_range: None,
            status,
            body_bytes: 0,
            connection_id,
            faults: Vec::new(),
        });
    }

    fn record_body_bytes(&self, log_index: usize, body_bytes: u64) {
        if let Some(entry) = lock(&self.log).get_mut(log_index) {
            entry.body_bytes = body_bytes;
        }
    }

    /// Fires a `ChangeContent` trigger whose threshold was crossed mid-stream, unless it fired
    /// already.
    fn fire_change(&self, path: &str, trigger: &ChangeTrigger) {
        let mut faults = lock(&self.faults);
        if faults.claim_change(trigger) {
            self.apply_change(path, trigger);
        }
        drop(faults);
    }

    /// Turns the file at `path` into its new version; the caller holds the faults lock and has
    /// claimed the trigger.
    fn apply_change(&self, path: &str, trigger: &ChangeTrigger) {
        if let Some(file) = lock(&self.files).get_mut(path) {
            file.seed = trigger.new_seed;
            file.etag = Some(trigger.new_etag.clone());
            file.last_modified = file
                .last_modified
                .map(|modified| modified + CHANGE_MODIFIED_STEP);
        }
    }

    /// Keeps the first panic among finished connection tasks.
    fn note_finished(&self, joined: Result<(), JoinError>) {
        if let Err(error) = joined
            && error.is_panic()
        {
            let mut panic = lock(&self.panic);
            if panic.is_none() {
                *panic = Some(error.into_panic());
            }
        }
    }
}

/// The server thread and the way to stop it.
#[derive(Debug)]
pub(crate) struct Running {
    thread: std::thread::JoinHandle<()>,
    shutdown: oneshot::Sender<()>,
}

impl Running {
    /// Stops accepting, aborts every connection, and joins the thread; `Err` carries the
    /// server's panic.
    pub(crate) fn stop(self) -> std::thread::Result<()> {
        // The receiver is gone only if the server thread already ended, which `join` reports.
        let _ = self.shutdown.send(());
        self.thread.join()
    }
}

/// Starts the server thread on an already bound listener.
pub(crate) fn spawn(
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
) -> std::io::Result<Running> {
    listener.set_nonblocking(true)?;
    // A few workers let body generation and socket writes of several connections overlap; more
    // would mostly compete with the client under test, which shares the machine.
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get().clamp(1, 4));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name("rangefetch-testserver-worker")
        .enable_all()
        .build()?;
    let listener = {
        let _context = runtime.enter();
        TcpListener::from_std(listener)?
    };
    let (shutdown, shutdown_requested) = oneshot::channel();
    let thread = std::thread::Builder::new()
        .name("rangefetch-testserver".to_owned())
        .spawn(move || {
            runtime.block_on(accept_loop(
                listener,
                Arc::clone(&shared),
                shutdown_requested,
            ));
            drop(runtime);
            let panic = lock(&shared.panic).take();
            if let Some(panic) = panic {
                std::panic::resume_unwind(panic);
            }
        })?;
    Ok(Running { thread, shutdown })
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut shutdown_requested: oneshot::Receiver<()>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            biased;
            // A dropped sender (the handle leaked its `Running`) also means stop.
            _ = &mut shutdown_requested => break,
            Some(joined) = connections.join_next(), if !connections.is_empty() => {
                shared.note_finished(joined);
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    let connection_id = shared.next_connection_id.fetch_add(1, Ordering::SeqCst);
                    // Without it, small responses wait for Nagle and delayed ACKs: 40 ms each.
                    let _ = stream.set_nodelay(true);
                    let connection = Connection::new(stream, connection_id, Arc::clone(&shared));
                    connections.spawn(connection.run());
                }
                // Running out of file descriptors is transient; back off rather than spin.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
        }
    }
    drop(listener);
    connections.abort_all();
    while let Some(joined) = connections.join_next().await {
        shared.note_finished(joined);
    }
}

/// How an exchange leaves the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ending {
    KeepAlive,
    /// Close cleanly (FIN).
    Close,
    /// Reset (`SO_LINGER` 0).
    Reset,
    /// The peer is gone or the socket failed: just drop it.
    Abandon,
}

/// Why no request head could be read.
enum ReadError {
    /// End of stream or a socket error: nothing to answer.
    Gone,
    Head(HeadError),
    TooLarge,
}

/// One accepted connection and its buffers.
struct Connection {
    stream: TcpStream,
    id: u64,
    shared: Arc<Shared>,
    /// Received bytes not yet parsed: the start of the next request head.
    input: Vec<u8>,
    /// Scratch space for generated body pieces and discarded request bodies.
    piece: Vec<u8>,
    /// Created by the first throttled response; the rate persists for the connection.
    bucket: Option<TokenBucket>,
}

impl Connection {
    fn new(stream: TcpStream, id: u64, shared: Arc<Shared>) -> Self {
        Self {
            stream,
            id,
            shared,
            input: Vec::with_capacity(4096),
            piece: vec![0; PIECE],
            bucket: None,
        }
    }

    async fn run(mut self) {
        loop {
            let ending = match self.read_head().await {
                Ok(head) => self.exchange(head).await,
                Err(ReadError::Gone) => Ending::Abandon,
                Err(ReadError::Head(error)) => self.reject(error.status()).await,
                Err(ReadError::TooLarge) => self.reject(431).await,
            };
            match ending {
                Ending::KeepAlive => continue,
                Ending::Close => {
                    // The peer may already be gone; the connection ends either way.
                    let _ = self.stream.shutdown().await;
                }
                Ending::Reset => {
                    // If this fails the drop below still closes, only less abruptly.
                    let _ = self.stream.set_zero_linger();
                }
                Ending::Abandon => {}
            }
            return;
        }
    }

    async fn read_head(&mut self) -> Result<RequestHead, ReadError> {
        loop {
            match http::parse_head(&self.input) {
                Ok(Some((head, len))) => {
                    self.input.drain(..len);
                    return Ok(head);
                }
                Ok(None) if self.input.len() >= http::MAX_HEAD_BYTES => {
                    return Err(ReadError::TooLarge);
                }
                Ok(None) => {}
                Err(error) => return Err(ReadError::Head(error)),
            }
            self.input.reserve(4096);
            match self.stream.read_buf(&mut self.input).await {
                // End of stream between requests or mid-head: there is no one to answer.
                Ok(0) | Err(_) => return Err(ReadError::Gone),
                Ok(_) => {}
            }
        }
    }

    /// Answers a request that could not be parsed, then closes: the stream can no longer be
    /// trusted to be at a request boundary.
    async fn reject(&mut self, status: u16) -> Ending {
        self.shared.log_rejected(self.id, status);
        let plan = respond::text(status, &format!("{status} {}\n", http::reason(status)));
        let mut headers = plan.headers;
        headers.push(("Connection".to_owned(), "close".to_owned()));
        let mut bytes = http::encode_head(status, &headers);
        if let Body::Text(text) = plan.body {
            bytes.extend_from_slice(text.as_bytes());
        }
        match self.stream.write_all(&bytes).await {
            Ok(()) => Ending::Close,
            Err(_) => Ending::Abandon,
        }
    }

    /// Skips a request body so the next request head starts where expected.
    async fn skip_request_body(&mut self, len: u64) -> std::io::Result<()> {
        let buffered = len.min(self.input.len() as u64) as usize;
        self.input.drain(..buffered);
        let mut remaining = len - buffered as u64;
        while remaining > 0 {
            let want = remaining.min(self.piece.len() as u64) as usize;
            let got = self.stream.read(&mut self.piece[..want]).await?;
            if got == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            remaining -= got as u64;
        }
        Ok(())
    }

    async fn exchange(&mut self, head: RequestHead) -> Ending {
        let body_len = match head.body_length() {
            Ok(len) => len,
            Err(error) => return self.reject(error.status()).await,
        };
        if self.skip_request_body(body_len).await.is_err() {
            return Ending::Abandon;
        }
        #[cfg(test)]
        if head.path == tests::PANIC_PATH {
            panic!("deliberate panic requested by a unit test");
        }
        let prepared = self.shared.prepare(&head, self.id);
        match prepared.plan.head_delay {
            Some(HeadDelay::For(duration)) => tokio::time::sleep(duration).await,
            // Ends only when shutdown aborts the task.
            Some(HeadDelay::Forever) => std::future::pending::<()>().await,
            None => {}
        }
        let head_bytes = http::encode_head(prepared.plan.status, &prepared.plan.headers);
        if self.stream.write_all(&head_bytes).await.is_err() {
            return Ending::Abandon;
        }
        let after_complete = if prepared.plan.close {
            Ending::Close
        } else {
            Ending::KeepAlive
        };
        if head.method == "HEAD" {
            return after_complete;
        }
        match &prepared.plan.body {
            Body::Empty => after_complete,
            Body::Text(text) => match self.stream.write_all(text.as_bytes()).await {
                Ok(()) => after_complete,
                Err(_) => Ending::Abandon,
            },
            Body::File(body) => {
                let (sent, ending) = self.stream_file(body, &prepared, &head.path).await;
                self.shared.record_body_bytes(prepared.log_index, sent);
                ending.unwrap_or(after_complete)
            }
        }
    }

    /// Streams a file body with its faults; returns the body bytes written and, if the body
    /// did not end normally, how the connection must end.
    async fn stream_file(
        &mut self,
        body: &FileBody,
        prepared: &Prepared,
        path: &str,
    ) -> (u64, Option<Ending>) {
        if let Some(rate) = body.throttle {
            match &mut self.bucket {
                Some(bucket) => bucket.set_rate(rate, Instant::now()),
                None => self.bucket = Some(TokenBucket::new(rate, Instant::now())),
            }
        }
        let stop = body.bytes_to_send();
        let mut pending_changes = prepared.changes.clone();
        let mut stalls = body.stalls.iter().peekable();
        let mut sent = 0u64;
        loop {
            while let Some(stall) = stalls.next_if(|stall| stall.after_bytes <= sent) {
                match stall.duration {
                    Some(duration) => tokio::time::sleep(duration).await,
                    // Ends only when shutdown aborts the task.
                    None => std::future::pending::<()>().await,
                }
            }
            if sent >= stop {
                break;
            }
            let next_stop = stalls
                .peek()
                .map_or(stop, |stall| stall.after_bytes.min(stop));
            let mut len = (next_stop - sent).min(PIECE as u64) as usize;
            if body.throttle.is_some()
                && let Some(bucket) = &mut self.bucket
            {
                len = bucket.take(len).await;
            }
            body.fill(sent, &mut self.piece[..len]);
            // Counted before the write, not after: a client that has read the last byte and
            // looks at the log, or sends its next request, must find the bytes counted and any
            // content change they trigger already made.
            let len_u64 = len as u64;
            self.shared
                .record_body_bytes(prepared.log_index, sent + len_u64);
            self.shared
                .body_bytes_sent
                .fetch_add(len_u64, Ordering::Relaxed);
            let served = prepared.served.fetch_add(len_u64, Ordering::Relaxed) + len_u64;
            pending_changes.retain(|trigger| {
                let crossed = served >= trigger.after_bytes_served;
                if crossed {
                    self.shared.fire_change(path, trigger);
                }
                !crossed
            });
            if self.stream.write_all(&self.piece[..len]).await.is_err() {
                // How much of the piece reached the socket is unknown; count none of it.
                self.shared
                    .body_bytes_sent
                    .fetch_sub(len_u64, Ordering::Relaxed);
                return (sent, Some(Ending::Abandon));
            }
            sent += len_u64;
        }
        let ending = body.cut.map(|cut| match cut.kind {
            CutKind::Reset => Ending::Reset,
            CutKind::Close => Ending::Close,
        });
        (sent, ending)
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use crate::{FileSpec, TestServer};

    /// A path that makes the connection task panic, so the drop-time re-raise can be tested.
    pub(super) const PANIC_PATH: &str = "/__panic";

    #[test]
    fn drop_re_raises_a_connection_panic() {
        let server = TestServer::serve(FileSpec::new("/f", 10, 1));
        let mut stream = std::net::TcpStream::connect(server.addr()).expect("connect");
        stream
            .write_all(format!("GET {PANIC_PATH} HTTP/1.1\r\n\r\n").as_bytes())
            .expect("send");
        // The task dies without answering, which closes the connection.
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest);
        assert!(rest.is_empty());
        let dropped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(server)));
        let payload = dropped.expect_err("the server's panic is re-raised on drop");
        let message = payload.downcast_ref::<&str>().copied().unwrap_or_default();
        assert_eq!(message, "deliberate panic requested by a unit test");
    }
}
