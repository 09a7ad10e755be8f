//! The test server seen from the wire: raw HTTP/1.1 over `std::net::TcpStream`, checking ranges,
//! validators, persistent connections, each scripted fault (header edits, gzip and chunked
//! bodies included), and shutdown on drop.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use rangefetch_testserver::{
    Fault, FaultRule, FaultScript, FileSpec, RequestLog, ServerConfig, TestServer, When, content,
    sha256_hex,
};
use sha2::{Digest, Sha256};

/// Long enough never to fire on a working server, short enough that a hang fails quickly.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// A response as read off the wire.
#[derive(Debug)]
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(header_name, _)| header_name.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// Every value of the header called `name`, in the order sent.
    fn headers_named(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(header_name, _)| header_name.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
            .collect()
    }

    fn content_length(&self) -> usize {
        self.header("content-length")
            .expect("Content-Length present")
            .parse()
            .expect("numeric Content-Length")
    }
}

/// A minimal HTTP/1.1 client on one connection.
struct Client {
    stream: TcpStream,
    /// Bytes read past the end of the last head.
    pending: Vec<u8>,
}

impl Client {
    fn connect(server: &TestServer) -> Client {
        let stream = TcpStream::connect(server.addr()).expect("connect to the test server");
        stream
            .set_read_timeout(Some(READ_TIMEOUT))
            .expect("set read timeout");
        Client {
            stream,
            pending: Vec::new(),
        }
    }

    fn send(&mut self, method: &str, path: &str, headers: &[(&str, &str)]) {
        let mut request = format!("{method} {path} HTTP/1.1\r\nHost: test\r\n");
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        self.stream
            .write_all(request.as_bytes())
            .expect("send request");
    }

    /// Sends a request and reads the complete response.
    fn exchange(&mut self, method: &str, path: &str, headers: &[(&str, &str)]) -> Response {
        self.send(method, path, headers);
        let (status, headers) = self.read_head();
        let mut response = Response {
            status,
            headers,
            body: Vec::new(),
        };
        if method != "HEAD" {
            let (body, error) = self.read_body(response.content_length());
            assert!(error.is_none(), "body cut short: {error:?}");
            response.body = body;
        }
        response
    }

    fn get(&mut self, path: &str, headers: &[(&str, &str)]) -> Response {
        self.exchange("GET", path, headers)
    }

    fn fill_pending(&mut self) -> std::io::Result<usize> {
        let mut buf = [0; 64 * 1024];
        let n = self.stream.read(&mut buf)?;
        self.pending.extend_from_slice(&buf[..n]);
        Ok(n)
    }

    fn read_head(&mut self) -> (u16, Vec<(String, String)>) {
        let end = loop {
            if let Some(pos) = self.pending.windows(4).position(|w| w == b"\r\n\r\n") {
                break pos + 4;
            }
            let n = self.fill_pending().expect("read response head");
            assert!(n > 0, "connection closed before a response head");
        };
        let head: Vec<u8> = self.pending.drain(..end).collect();
        let head = String::from_utf8(head).expect("ASCII head");
        let mut lines = head.split("\r\n");
        let status_line = lines.next().expect("status line");
        let status = status_line
            .split(' ')
            .nth(1)
            .expect("status code")
            .parse()
            .expect("numeric status");
        let headers = lines
            .filter(|line| !line.is_empty())
            .map(|line| {
                let (name, value) = line.split_once(": ").expect("header line");
                (name.to_owned(), value.to_owned())
            })
            .collect();
        (status, headers)
    }

    /// Reads up to `len` body bytes; the error, if any, says why fewer came.
    fn read_body(&mut self, len: usize) -> (Vec<u8>, Option<std::io::Error>) {
        while self.pending.len() < len {
            match self.fill_pending() {
                Ok(0) => {
                    let body = std::mem::take(&mut self.pending);
                    return (body, Some(ErrorKind::UnexpectedEof.into()));
                }
                Ok(_) => {}
                Err(error) => return (std::mem::take(&mut self.pending), Some(error)),
            }
        }
        (self.pending.drain(..len).collect(), None)
    }

    /// Sends a request and reads its head, leaving the body to the caller.
    fn start(&mut self, path: &str, headers: &[(&str, &str)]) -> Response {
        self.send("GET", path, headers);
        let (status, headers) = self.read_head();
        Response {
            status,
            headers,
            body: Vec::new(),
        }
    }

    /// Reads the rest of the stream: a close-delimited body.
    fn read_to_close(&mut self) -> Vec<u8> {
        let mut body = std::mem::take(&mut self.pending);
        self.stream
            .read_to_end(&mut body)
            .expect("read to the end of the stream");
        body
    }

    /// Reads one chunked body strictly (hex sizes, CRLFs, the zero chunk, no trailers); returns
    /// the data, the chunk sizes, and how many bytes the framed body took on the wire.
    fn read_chunked(&mut self) -> (Vec<u8>, Vec<usize>, usize) {
        let mut data = Vec::new();
        let mut sizes = Vec::new();
        let mut wire_len = 0;
        loop {
            let line_end = loop {
                if let Some(pos) = self.pending.windows(2).position(|w| w == b"\r\n") {
                    break pos;
                }
                assert!(self.fill_pending().expect("read a chunk size") > 0);
            };
            let line: Vec<u8> = self.pending.drain(..line_end + 2).collect();
            let size_text = std::str::from_utf8(&line[..line_end]).expect("ASCII chunk size");
            let size = usize::from_str_radix(size_text, 16).expect("hex chunk size");
            let (chunk, error) = self.read_body(size + 2);
            assert!(error.is_none(), "chunk cut short: {error:?}");
            assert_eq!(&chunk[size..], b"\r\n", "CRLF after the chunk data");
            wire_len += line.len() + size + 2;
            sizes.push(size);
            if size == 0 {
                assert_eq!(chunk, b"\r\n", "no trailers");
                return (data, sizes, wire_len);
            }
            data.extend_from_slice(&chunk[..size]);
        }
    }

    /// Whether the server closed the connection (end of stream, or a reset).
    fn is_closed(&mut self) -> bool {
        match self.fill_pending() {
            Ok(n) => n == 0,
            Err(error) => error.kind() == ErrorKind::ConnectionReset,
        }
    }
}

fn server_with(files: Vec<FileSpec>, rules: Vec<FaultRule>) -> TestServer {
    TestServer::start(ServerConfig {
        files,
        faults: FaultScript::new(rules),
    })
}

fn gunzip(compressed: &[u8]) -> Vec<u8> {
    let mut decompressed = Vec::new();
    flate2::read::GzDecoder::new(compressed)
        .read_to_end(&mut decompressed)
        .expect("a valid gzip stream");
    decompressed
}

fn only_request(server: &TestServer) -> RequestLog {
    let requests = server.requests();
    assert_eq!(requests.len(), 1, "{requests:#?}");
    requests.into_iter().next().expect("one request")
}

#[test]
fn range_request_gets_206_with_the_right_bytes_and_headers() {
    let file = FileSpec::new("/img.bin", 100_000, 3);
    let server = TestServer::serve(file.clone());
    let mut client = Client::connect(&server);
    let response = client.get("/img.bin", &[("Range", "bytes=1000-1999")]);
    assert_eq!(response.status, 206);
    assert_eq!(
        response.header("content-range"),
        Some("bytes 1000-1999/100000")
    );
    assert_eq!(response.header("content-length"), Some("1000"));
    assert_eq!(response.header("accept-ranges"), Some("bytes"));
    assert_eq!(response.header("etag"), file.etag.as_deref());
    assert_eq!(
        response.header("last-modified"),
        Some("Tue, 02 Jan 2024 03:04:05 GMT")
    );
    assert_eq!(response.body, content(3, 1000..2000));
    let log = only_request(&server);
    assert_eq!(
        (log.method.as_str(), log.path.as_str(), log.status),
        ("GET", "/img.bin", 206)
    );
    assert_eq!(log.range.as_deref(), Some("bytes=1000-1999"));
    assert_eq!(log.body_bytes, 1000);
    assert_eq!(server.body_bytes_sent(), 1000);
}

#[test]
fn open_suffix_and_overlong_ranges_resolve_against_the_size() {
    let server = TestServer::serve(FileSpec::new("/f", 5000, 8));
    let mut client = Client::connect(&server);
    for (range, content_range, bytes) in [
        ("bytes=4990-", "bytes 4990-4999/5000", 4990..5000),
        ("bytes=-10", "bytes 4990-4999/5000", 4990..5000),
        ("bytes=4000-999999", "bytes 4000-4999/5000", 4000..5000),
        ("bytes=0-0", "bytes 0-0/5000", 0..1),
    ] {
        let response = client.get("/f", &[("Range", range)]);
        assert_eq!(response.status, 206, "{range}");
        assert_eq!(response.header("content-range"), Some(content_range));
        assert_eq!(response.body, content(8, bytes), "{range}");
    }
    let past_end = client.get("/f", &[("Range", "bytes=5000-")]);
    assert_eq!(past_end.status, 416);
    assert_eq!(past_end.header("content-range"), Some("bytes */5000"));
    let multi = client.get("/f", &[("Range", "bytes=0-1,10-11")]);
    assert_eq!((multi.status, multi.body.len()), (200, 5000));
}

#[test]
fn if_range_serves_the_range_only_for_the_same_version() {
    let file = FileSpec::new("/f", 3000, 4);
    let etag = file.etag.clone().expect("default strong etag");
    let server = TestServer::serve(file);
    let mut client = Client::connect(&server);
    let range = ("Range", "bytes=100-199");
    for (if_range, status) in [
        (etag.as_str(), 206),
        ("\"something-else\"", 200),
        ("W/\"4-bb8\"", 200),
        ("Tue, 02 Jan 2024 03:04:05 GMT", 206),
        ("Tue, 02 Jan 2024 03:04:06 GMT", 200),
        ("not a validator", 200),
    ] {
        let response = client.get("/f", &[range, ("If-Range", if_range)]);
        assert_eq!(response.status, status, "If-Range: {if_range}");
        let expected = if status == 206 { 100..200 } else { 0..3000 };
        assert_eq!(response.body, content(4, expected), "If-Range: {if_range}");
    }
    assert_eq!(
        server.requests()[0].if_range.as_deref(),
        Some(etag.as_str())
    );
}

#[test]
fn weak_etags_never_satisfy_if_range() {
    let file = FileSpec::new("/w", 100, 1).with_etag(Some("W/\"weak\""));
    let server = TestServer::serve(file);
    let mut client = Client::connect(&server);
    let response = client.get("/w", &[("Range", "bytes=0-9"), ("If-Range", "W/\"weak\"")]);
    assert_eq!(response.status, 200);
    assert_eq!(response.header("etag"), Some("W/\"weak\""));
}

#[test]
fn empty_file_answers_416_to_any_range_and_200_without_one() {
    let server = TestServer::serve(FileSpec::new("/empty", 0, 1));
    let mut client = Client::connect(&server);
    for range in ["bytes=0-", "bytes=0-0", "bytes=-1"] {
        let response = client.get("/empty", &[("Range", range)]);
        assert_eq!(response.status, 416, "{range}");
        assert_eq!(response.header("content-range"), Some("bytes */0"));
    }
    let whole = client.get("/empty", &[]);
    assert_eq!((whole.status, whole.body.len()), (200, 0));
}

#[test]
fn keep_alive_serves_several_requests_on_one_connection() {
    let server = TestServer::serve(FileSpec::new("/f", 10_000, 2));
    let mut client = Client::connect(&server);
    let first = client.get("/f", &[("Range", "bytes=0-4999")]);
    let second = client.get("/f", &[("Range", "bytes=5000-9999")]);
    assert_eq!([first.body, second.body].concat(), content(2, 0..10_000));
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].connection_id, requests[1].connection_id);
    // A second connection gets the next id.
    let mut other = Client::connect(&server);
    other.get("/f", &[("Range", "bytes=0-0")]);
    assert_eq!(
        server.requests()[2].connection_id,
        requests[0].connection_id + 1
    );
}

#[test]
fn connection_close_is_honoured() {
    let server = TestServer::serve(FileSpec::new("/f", 100, 2));
    let mut client = Client::connect(&server);
    let response = client.get("/f", &[("Connection", "close")]);
    assert_eq!(response.header("connection"), Some("close"));
    assert!(client.is_closed());
}

#[test]
fn http_1_0_closes_by_default() {
    let server = TestServer::serve(FileSpec::new("/f", 10, 2));
    let mut client = Client::connect(&server);
    client
        .stream
        .write_all(b"GET /f HTTP/1.0\r\n\r\n")
        .expect("send");
    let mut response = Vec::new();
    client
        .stream
        .read_to_end(&mut response)
        .expect("read to end of stream");
    assert!(response.ends_with(&content(2, 0..10)));
}

#[test]
fn head_sends_the_get_headers_without_a_body() {
    let server = TestServer::serve(FileSpec::new("/f", 12_345, 6));
    let mut client = Client::connect(&server);
    let head = client.exchange("HEAD", "/f", &[("Range", "bytes=0-9")]);
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some("12345"));
    assert_eq!(head.header("accept-ranges"), Some("bytes"));
    assert!(head.header("etag").is_some());
    // Had a body been sent, this response would be read from the middle of it.
    let get = client.get("/f", &[("Range", "bytes=0-9")]);
    assert_eq!((get.status, get.body), (206, content(6, 0..10)));
    assert_eq!(server.requests()[0].body_bytes, 0);
}

#[test]
fn unknown_paths_methods_and_garbage_get_errors() {
    let server = TestServer::serve(FileSpec::new("/f", 10, 1));
    let mut client = Client::connect(&server);
    assert_eq!(client.get("/nope", &[]).status, 404);
    assert_eq!(client.get("/f?signature=abc", &[]).status, 200);
    // The request body is skipped, so the next request on the connection parses.
    client
        .stream
        .write_all(b"POST /f HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc")
        .expect("send");
    let (status, headers) = client.read_head();
    assert_eq!(status, 405);
    let allow = headers.iter().find(|(name, _)| name == "Allow");
    assert_eq!(allow.map(|(_, value)| value.as_str()), Some("GET, HEAD"));
    let error_text_len = headers
        .iter()
        .find(|(name, _)| name == "Content-Length")
        .and_then(|(_, value)| value.parse().ok())
        .expect("Content-Length");
    client.read_body(error_text_len);
    assert_eq!(client.get("/f", &[]).status, 200);
    assert_eq!(server.requests()[1].target, "/f?signature=abc");
    let mut garbage = Client::connect(&server);
    garbage
        .stream
        .write_all(b"this is not http\r\n\r\n")
        .expect("send");
    let (status, _) = garbage.read_head();
    assert_eq!(status, 400);
}

#[test]
fn files_without_range_support_answer_200() {
    let server = TestServer::serve(FileSpec::new("/f", 1000, 1).without_ranges());
    let mut client = Client::connect(&server);
    let response = client.get("/f", &[("Range", "bytes=0-9")]);
    assert_eq!((response.status, response.body.len()), (200, 1000));
    assert_eq!(response.header("accept-ranges"), None);
}

#[test]
fn reset_after_sends_that_many_bytes_then_resets() {
    let server = server_with(
        vec![FileSpec::new("/f", 1_000_000, 5)],
        vec![FaultRule::new(
            When::Nth(0),
            Fault::ResetAfter { bytes: 10_000 },
        )],
    );
    let mut client = Client::connect(&server);
    client.send("GET", "/f", &[]);
    let (status, _) = client.read_head();
    assert_eq!(status, 200);
    let (body, error) = client.read_body(1_000_000);
    let error = error.expect("the body is cut");
    assert!(
        matches!(
            error.kind(),
            ErrorKind::ConnectionReset | ErrorKind::UnexpectedEof
        ),
        "{error:?}"
    );
    assert!(body.len() <= 10_000);
    assert_eq!(body, content(5, 0..body.len() as u64));
    let log = only_request(&server);
    assert_eq!(log.body_bytes, 10_000);
    assert_eq!(log.faults, [Fault::ResetAfter { bytes: 10_000 }]);
    // Only the first GET was scripted.
    let mut retry = Client::connect(&server);
    assert_eq!(
        retry.get("/f", &[("Range", "bytes=10000-")]).body.len(),
        990_000
    );
}

#[test]
fn close_after_and_short_body_end_the_body_early_with_a_fin() {
    let server = server_with(
        vec![FileSpec::new("/f", 50_000, 5)],
        vec![
            FaultRule::new(When::Nth(0), Fault::CloseAfter { bytes: 1234 }),
            FaultRule::new(When::Nth(1), Fault::ShortBody { missing: 100 }),
        ],
    );
    for (expected_len, declared) in [(1234, 50_000), (49_900, 50_000)] {
        let mut client = Client::connect(&server);
        client.send("GET", "/f", &[]);
        let (_, headers) = client.read_head();
        let length = headers
            .iter()
            .find(|(name, _)| name == "Content-Length")
            .map(|(_, value)| value.as_str());
        assert_eq!(length, Some(declared.to_string().as_str()));
        let (body, error) = client.read_body(declared);
        assert_eq!(
            error.map(|e| e.kind()),
            Some(ErrorKind::UnexpectedEof),
            "a clean close"
        );
        assert_eq!(body, content(5, 0..expected_len));
    }
}

#[test]
fn bounded_stall_pauses_then_completes() {
    let stall = Duration::from_millis(300);
    let server = server_with(
        vec![FileSpec::new("/f", 100_000, 5)],
        vec![FaultRule::always(Fault::Stall {
            after_bytes: 1000,
            duration: Some(stall),
        })],
    );
    let mut client = Client::connect(&server);
    let started = Instant::now();
    client.send("GET", "/f", &[]);
    client.read_head();
    let (first, error) = client.read_body(1000);
    assert!(error.is_none());
    // The server is now stalled: a short read times out instead of returning data.
    client
        .stream
        .set_read_timeout(Some(Duration::from_millis(50)))
        .expect("set timeout");
    let timed_out = client.read_body(1);
    assert!(
        matches!(
            timed_out.1.map(|e| e.kind()),
            Some(ErrorKind::WouldBlock | ErrorKind::TimedOut)
        ),
        "no byte during the stall"
    );
    assert_eq!(server.requests()[0].body_bytes, 1000);
    client
        .stream
        .set_read_timeout(Some(READ_TIMEOUT))
        .expect("set timeout");
    let (rest, error) = client.read_body(99_000);
    assert!(error.is_none());
    assert!(started.elapsed() >= stall);
    assert_eq!([first, rest].concat(), content(5, 0..100_000));
}

#[test]
fn drop_aborts_a_stalled_connection_and_stops_accepting() {
    let server = server_with(
        vec![FileSpec::new("/f", 100_000, 5)],
        vec![FaultRule::always(Fault::Stall {
            after_bytes: 10,
            duration: None,
        })],
    );
    let addr = server.addr();
    let mut client = Client::connect(&server);
    client.send("GET", "/f", &[]);
    client.read_head();
    let (_, error) = client.read_body(10);
    assert!(error.is_none());
    let started = Instant::now();
    drop(server);
    assert!(started.elapsed() < Duration::from_secs(2), "drop is prompt");
    let (_, error) = client.read_body(100_000);
    assert!(error.is_some(), "the stalled connection was closed");
    let refused = TcpStream::connect_timeout(&addr, Duration::from_secs(1));
    assert!(refused.is_err(), "the port no longer accepts");
}

#[test]
fn status_with_retry_after_then_success_on_the_same_connection() {
    let server = server_with(
        vec![FileSpec::new("/f", 100, 5)],
        vec![FaultRule::new(
            When::FirstN(1),
            Fault::Status {
                code: 503,
                retry_after: Some("2".to_owned()),
            },
        )],
    );
    let mut client = Client::connect(&server);
    let busy = client.get("/f", &[]);
    assert_eq!(busy.status, 503);
    assert_eq!(busy.header("retry-after"), Some("2"));
    let ok = client.get("/f", &[]);
    assert_eq!((ok.status, ok.body), (200, content(5, 0..100)));
    let statuses: Vec<u16> = server.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [503, 200]);
    assert_eq!(server.body_bytes_sent(), 100, "error text is not counted");
}

#[test]
fn change_content_switches_version_after_the_threshold() {
    let file = FileSpec::new("/f", 4000, 1);
    let old_etag = file.etag.clone().expect("default etag");
    let server = server_with(
        vec![file],
        vec![FaultRule::always(Fault::ChangeContent {
            after_bytes_served: 1000,
            new_seed: 99,
            new_etag: "\"v2\"".to_owned(),
        })],
    );
    let mut client = Client::connect(&server);
    // The response during which the threshold is crossed keeps its version...
    let first = client.get("/f", &[]);
    assert_eq!(first.header("etag"), Some(old_etag.as_str()));
    assert_eq!(first.body, content(1, 0..4000));
    // ...and later requests get the new one, which a stale If-Range detects.
    let second = client.get(
        "/f",
        &[("Range", "bytes=2000-"), ("If-Range", old_etag.as_str())],
    );
    assert_eq!(second.status, 200);
    assert_eq!(second.header("etag"), Some("\"v2\""));
    assert_eq!(second.body, content(99, 0..4000));
    assert_eq!(
        second.header("last-modified"),
        Some("Tue, 02 Jan 2024 04:04:05 GMT")
    );
    assert_eq!(server.file("/f").map(|f| f.seed), Some(99));
}

#[test]
fn ignore_range_answers_200_with_the_whole_file() {
    let server = server_with(
        vec![FileSpec::new("/f", 3000, 7)],
        vec![FaultRule::always(Fault::IgnoreRange)],
    );
    let mut client = Client::connect(&server);
    let response = client.get("/f", &[("Range", "bytes=100-199")]);
    assert_eq!(response.status, 200);
    assert_eq!(response.header("content-range"), None);
    assert_eq!(response.body, content(7, 0..3000));
}

#[test]
fn header_faults_lie_about_the_range() {
    let server = server_with(
        vec![FileSpec::new("/f", 3000, 7)],
        vec![
            FaultRule::new(When::Nth(0), Fault::WrongContentRange { shift: 10 }),
            FaultRule::new(When::Nth(1), Fault::WrongTotal { total: 2999 }),
            FaultRule::new(When::Nth(2), Fault::OkOnEtagIfRange),
            FaultRule::new(When::Nth(3), Fault::OkOnEtagIfRange),
        ],
    );
    let mut client = Client::connect(&server);
    let shifted = client.get("/f", &[("Range", "bytes=100-199")]);
    assert_eq!(shifted.header("content-range"), Some("bytes 110-209/3000"));
    assert_eq!(shifted.body, content(7, 100..200));
    let wrong_total = client.get("/f", &[("Range", "bytes=100-199")]);
    assert_eq!(
        wrong_total.header("content-range"),
        Some("bytes 100-199/2999")
    );
    let etag = server.file("/f").and_then(|f| f.etag).expect("etag");
    let cdn = client.get("/f", &[("Range", "bytes=0-9"), ("If-Range", &etag)]);
    assert_eq!((cdn.status, cdn.body.len()), (200, 3000));
    let by_date = client.get(
        "/f",
        &[
            ("Range", "bytes=0-9"),
            ("If-Range", "Tue, 02 Jan 2024 03:04:05 GMT"),
        ],
    );
    assert_eq!(by_date.status, 206);
}

#[test]
fn flip_byte_corrupts_exactly_one_byte() {
    let server = server_with(
        vec![FileSpec::new("/f", 200_000, 7)],
        vec![FaultRule::always(Fault::FlipByte { offset: 150_000 })],
    );
    let mut client = Client::connect(&server);
    let response = client.get("/f", &[("Range", "bytes=100000-")]);
    let mut expected = content(7, 100_000..200_000);
    expected[50_000] ^= 0xFF;
    assert_eq!(response.body, expected);
    let untouched = client.get("/f", &[("Range", "bytes=0-99999")]);
    assert_eq!(untouched.body, content(7, 0..100_000));
}

#[test]
fn redirect_targets_one_path() {
    let server = server_with(
        vec![FileSpec::new("/img.bin", 100, 7)],
        vec![
            FaultRule::always(Fault::Redirect {
                status: 302,
                location: "/img.bin".to_owned(),
            })
            .on_path("/old.bin"),
        ],
    );
    let mut client = Client::connect(&server);
    let head = client.exchange("HEAD", "/old.bin", &[]);
    assert_eq!(head.status, 302);
    let redirect = client.get("/old.bin", &[]);
    assert_eq!(redirect.status, 302);
    assert_eq!(redirect.header("location"), Some("/img.bin"));
    assert_eq!(client.get("/img.bin", &[]).body, content(7, 0..100));
}

#[test]
fn forbidden_after_expires_the_url() {
    let server = server_with(
        vec![FileSpec::new("/f", 100, 7)],
        vec![FaultRule::always(Fault::ForbiddenAfter { requests: 2 })],
    );
    let mut client = Client::connect(&server);
    let statuses: Vec<u16> = (0..4).map(|_| client.get("/f", &[]).status).collect();
    assert_eq!(statuses, [200, 200, 403, 403]);
}

#[test]
fn a_rule_limited_by_times_lets_the_retry_through() {
    let server = server_with(
        vec![FileSpec::new("/f", 10_000, 7)],
        vec![FaultRule::new(
            When::RangeStartsAt(5000).times(1),
            Fault::Status {
                code: 500,
                retry_after: None,
            },
        )],
    );
    let mut client = Client::connect(&server);
    let range = [("Range", "bytes=5000-")];
    assert_eq!(client.get("/f", &[("Range", "bytes=0-4999")]).status, 206);
    assert_eq!(client.get("/f", &range).status, 500);
    assert_eq!(client.get("/f", &range).status, 206);
}

#[test]
fn throttle_limits_the_rate() {
    let rate = 1_000_000;
    let server = server_with(
        vec![FileSpec::new("/f", 200_000, 7)],
        vec![FaultRule::always(Fault::Throttle {
            bytes_per_sec: rate,
        })],
    );
    let mut client = Client::connect(&server);
    let started = Instant::now();
    let response = client.get("/f", &[]);
    let elapsed = started.elapsed();
    assert_eq!(response.body, content(7, 0..200_000));
    // 200 kB at 1 MB/s is 200 ms less one 10 ms burst; the bound is loose on purpose.
    assert!(elapsed >= Duration::from_millis(150), "{elapsed:?}");
}

#[test]
fn flaky_script_cuts_every_long_response_within_bounds() {
    let server = TestServer::start(ServerConfig {
        files: vec![FileSpec::new("/f", 1_000_000, 7)],
        faults: FaultScript::flaky(u64::MAX, 1000..5000, 3),
    });
    for _ in 0..5 {
        let mut client = Client::connect(&server);
        client.send("GET", "/f", &[]);
        client.read_head();
        let (body, error) = client.read_body(1_000_000);
        assert!(error.is_some());
        assert!((1000..5000).contains(&body.len()), "{}", body.len());
    }
    let sent: Vec<u64> = server.requests().iter().map(|r| r.body_bytes).collect();
    assert!(sent.iter().all(|n| (1000..5000).contains(n)), "{sent:?}");
}

#[test]
fn faults_and_files_can_change_at_runtime() {
    let server = TestServer::serve(FileSpec::new("/f", 100, 1));
    let mut client = Client::connect(&server);
    assert_eq!(client.get("/f", &[]).status, 200);
    server.set_faults(FaultScript::new(vec![FaultRule::new(
        When::Nth(0),
        Fault::Status {
            code: 429,
            retry_after: Some("Wed, 21 Oct 2015 07:28:00 GMT".to_owned()),
        },
    )]));
    // The new script counts from zero.
    assert_eq!(client.get("/f", &[]).status, 429);
    server.replace_file(FileSpec::new("/f", 50, 2).with_etag(Some("\"new\"")));
    let replaced = client.get("/f", &[]);
    assert_eq!(replaced.header("etag"), Some("\"new\""));
    assert_eq!(replaced.body, content(2, 0..50));
}

#[test]
fn parallel_ranges_reassemble_to_the_published_sha256() {
    let size: u64 = 8 << 20;
    let server = TestServer::serve(FileSpec::new("/big", size, 11));
    let n_parts = 4;
    let part_len = size / n_parts;
    let parts: Vec<Vec<u8>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..n_parts)
            .map(|part_idx| {
                let server = &server;
                scope.spawn(move || {
                    let first = part_idx * part_len;
                    let range = format!("bytes={first}-{}", first + part_len - 1);
                    Client::connect(server)
                        .get("/big", &[("Range", &range)])
                        .body
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| handle.join().expect("client thread"))
            .collect()
    });
    let mut hasher = Sha256::new();
    for part in &parts {
        hasher.update(part);
    }
    let digest: String = hasher
        .finalize()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    assert_eq!(digest, sha256_hex(11, size));
    assert_eq!(server.body_bytes_sent(), size);
}

#[test]
fn starts_serves_and_drops_inside_an_async_runtime() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("build a runtime");
    runtime.block_on(async {
        let server = TestServer::serve(FileSpec::new("/f", 1000, 4));
        let mut stream = tokio::net::TcpStream::connect(server.addr())
            .await
            .expect("connect");
        stream
            .write_all(b"GET /f HTTP/1.1\r\nConnection: close\r\n\r\n")
            .await
            .expect("send");
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.expect("receive");
        assert!(response.ends_with(&content(4, 0..1000)));
        // Dropping joins the server thread; its runtime must not be dropped in this one.
        drop(server);
    });
}

#[test]
fn set_header_replaces_a_validator_that_if_range_then_follows() {
    let file = FileSpec::new("/f", 1000, 3);
    let own_etag = file.etag.clone().expect("default etag");
    let server = server_with(
        vec![file],
        vec![
            FaultRule::always(Fault::SetHeader {
                name: "ETag".to_owned(),
                value: "\"backend-2\"".to_owned(),
            }),
            FaultRule::always(Fault::SetHeader {
                name: "X-Backend".to_owned(),
                value: "2".to_owned(),
            }),
        ],
    );
    let mut client = Client::connect(&server);
    let plain = client.get("/f", &[("Range", "bytes=0-9")]);
    assert_eq!(plain.headers_named("etag"), ["\"backend-2\""]);
    assert_eq!(
        plain.headers.last().map(|(name, _)| name.as_str()),
        Some("X-Backend")
    );
    let stale = client.get(
        "/f",
        &[("Range", "bytes=100-199"), ("If-Range", own_etag.as_str())],
    );
    assert_eq!(stale.status, 200);
    assert_eq!(stale.body, content(3, 0..1000));
    let current = client.get(
        "/f",
        &[("Range", "bytes=100-199"), ("If-Range", "\"backend-2\"")],
    );
    assert_eq!((current.status, current.body), (206, content(3, 100..200)));
    let head = client.exchange("HEAD", "/f", &[]);
    assert_eq!(head.header("etag"), Some("\"backend-2\""));
}

#[test]
fn set_header_on_every_other_get_models_two_backends() {
    let date = "Tue, 02 Jan 2024 03:04:05 GMT";
    let later = "Wed, 03 Jan 2024 03:04:05 GMT";
    let server = server_with(
        vec![FileSpec::new("/f", 1000, 3)],
        vec![FaultRule::new(
            When::EveryNth(2),
            Fault::SetHeader {
                name: "Last-Modified".to_owned(),
                value: later.to_owned(),
            },
        )],
    );
    let mut client = Client::connect(&server);
    let answers: Vec<(u16, Option<String>)> = (0..4)
        .map(|_| {
            let response = client.get("/f", &[("Range", "bytes=0-9"), ("If-Range", date)]);
            (
                response.status,
                response.header("last-modified").map(str::to_owned),
            )
        })
        .collect();
    let (old, new) = (Some(date.to_owned()), Some(later.to_owned()));
    assert_eq!(
        answers,
        [
            (206, old.clone()),
            (200, new.clone()),
            (206, old),
            (200, new)
        ]
    );
}

#[test]
fn remove_header_drops_the_validator_and_content_length_closes() {
    let file = FileSpec::new("/f", 5000, 3);
    let etag = file.etag.clone().expect("default etag");
    let server = server_with(
        vec![file],
        vec![
            FaultRule::new(
                When::Nth(0),
                Fault::RemoveHeader {
                    name: "etag".to_owned(),
                },
            ),
            FaultRule::new(
                When::Nth(1),
                Fault::RemoveHeader {
                    name: "Content-Length".to_owned(),
                },
            ),
        ],
    );
    let mut client = Client::connect(&server);
    let no_etag = client.get("/f", &[("Range", "bytes=0-9"), ("If-Range", &etag)]);
    assert_eq!(no_etag.header("etag"), None);
    assert_eq!((no_etag.status, no_etag.body), (200, content(3, 0..5000)));
    let response = client.start("/f", &[("Range", "bytes=1000-2999")]);
    assert_eq!(response.status, 206);
    assert_eq!(response.header("content-length"), None);
    assert_eq!(response.header("connection"), Some("close"));
    assert_eq!(
        response.header("content-range"),
        Some("bytes 1000-2999/5000")
    );
    assert_eq!(client.read_to_close(), content(3, 1000..3000));
    assert_eq!(server.requests()[1].body_bytes, 2000);
}

#[test]
fn append_header_duplicates_framing_headers_and_the_first_frames_the_body() {
    let server = server_with(
        vec![FileSpec::new("/f", 1000, 3)],
        vec![
            FaultRule::new(
                When::Nth(0),
                Fault::AppendHeader {
                    name: "Content-Length".to_owned(),
                    value: "5".to_owned(),
                },
            ),
            FaultRule::new(
                When::Nth(1),
                Fault::AppendHeader {
                    name: "Content-Range".to_owned(),
                    value: "bytes 500-599/1000".to_owned(),
                },
            ),
        ],
    );
    let mut client = Client::connect(&server);
    let two_lengths = client.start("/f", &[("Range", "bytes=0-99")]);
    assert_eq!(two_lengths.headers_named("content-length"), ["100", "5"]);
    assert_eq!(
        two_lengths.headers.last(),
        Some(&("Content-Length".to_owned(), "5".to_owned()))
    );
    let (body, error) = client.read_body(100);
    assert!(error.is_none());
    assert_eq!(body, content(3, 0..100));
    // The connection is still at a message boundary: the server sent the first length's body.
    let two_ranges = client.get("/f", &[("Range", "bytes=0-99")]);
    assert_eq!(
        two_ranges.headers_named("content-range"),
        ["bytes 0-99/1000", "bytes 500-599/1000"]
    );
    assert_eq!(two_ranges.body, content(3, 0..100));
    assert_eq!(
        client.get("/f", &[("Range", "bytes=0-0")]).body,
        content(3, 0..1)
    );
}

#[test]
fn longer_body_sends_padding_the_content_range_does_not_name() {
    let server = server_with(
        vec![FileSpec::new("/f", 1000, 3)],
        vec![FaultRule::new(
            When::Nth(0),
            Fault::LongerBody { extra: 50 },
        )],
    );
    let mut client = Client::connect(&server);
    let response = client.get("/f", &[("Range", "bytes=100-199")]);
    assert_eq!(response.status, 206);
    assert_eq!(response.header("content-range"), Some("bytes 100-199/1000"));
    assert_eq!(response.header("content-length"), Some("150"));
    let mut expected = content(3, 100..200);
    expected.extend([0xA5; 50]);
    assert_eq!(response.body, expected);
    assert_eq!(server.requests()[0].body_bytes, 150);
    assert_eq!(server.body_bytes_sent(), 150);
    // The padding was framed by Content-Length, so the connection stays usable.
    assert_eq!(
        client.get("/f", &[("Range", "bytes=0-9")]).body,
        content(3, 0..10)
    );
}

#[test]
fn content_range_faults_send_more_than_asked_or_odd_headers() {
    let server = server_with(
        vec![FileSpec::new("/f", 1000, 3)],
        vec![
            FaultRule::new(When::Nth(0), Fault::RangeToEnd),
            FaultRule::new(When::Nth(1), Fault::UnknownTotal),
            FaultRule::new(When::Nth(2), Fault::UppercaseUnit),
            FaultRule::new(When::Nth(3), Fault::OkWithContentRange),
        ],
    );
    let mut client = Client::connect(&server);
    let to_end = client.get("/f", &[("Range", "bytes=100-199")]);
    assert_eq!(to_end.status, 206);
    assert_eq!(to_end.header("content-range"), Some("bytes 100-999/1000"));
    assert_eq!(to_end.header("content-length"), Some("900"));
    assert_eq!(to_end.body, content(3, 100..1000));
    let unknown = client.get("/f", &[("Range", "bytes=100-199")]);
    assert_eq!(unknown.status, 206);
    assert_eq!(unknown.header("content-range"), Some("bytes 100-199/*"));
    assert_eq!(unknown.body, content(3, 100..200));
    let upper = client.get("/f", &[("Range", "bytes=100-199")]);
    assert_eq!(upper.header("content-range"), Some("BYTES 100-199/1000"));
    assert_eq!(upper.body, content(3, 100..200));
    let ok = client.get("/f", &[("Range", "bytes=100-199")]);
    assert_eq!(ok.status, 200);
    assert_eq!(ok.header("content-range"), Some("bytes 100-199/1000"));
    assert_eq!(ok.header("content-length"), Some("100"));
    assert_eq!(ok.body, content(3, 100..200));
    let statuses: Vec<u16> = server.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [206, 206, 206, 200]);
    let body_bytes: Vec<u64> = server.requests().iter().map(|r| r.body_bytes).collect();
    assert_eq!(body_bytes, [900, 100, 100, 100]);
}

#[test]
fn not_modified_has_no_body_and_keeps_the_connection() {
    let file = FileSpec::new("/f", 1000, 3);
    let etag = file.etag.clone().expect("default etag");
    let server = server_with(
        vec![file],
        vec![FaultRule::new(When::Nth(0), Fault::NotModified)],
    );
    let mut client = Client::connect(&server);
    let response = client.start("/f", &[("Range", "bytes=0-9")]);
    assert_eq!(response.status, 304);
    assert_eq!(response.header("etag"), Some(etag.as_str()));
    assert_eq!(
        response.header("last-modified"),
        Some("Tue, 02 Jan 2024 03:04:05 GMT")
    );
    assert_eq!(response.header("content-length"), None);
    // Had a body been sent, this response would be read from the middle of it.
    let next = client.get("/f", &[("Range", "bytes=0-9")]);
    assert_eq!((next.status, next.body), (206, content(3, 0..10)));
    assert_eq!(server.requests()[0].body_bytes, 0);
}

#[test]
fn ignore_if_range_serves_the_range_of_another_version() {
    let server = server_with(
        vec![FileSpec::new("/f", 1000, 3)],
        vec![FaultRule::always(Fault::IgnoreIfRange)],
    );
    let mut client = Client::connect(&server);
    let response = client.get(
        "/f",
        &[
            ("Range", "bytes=100-199"),
            ("If-Range", "\"an-older-version\""),
        ],
    );
    assert_eq!(response.status, 206);
    assert_eq!(response.header("content-range"), Some("bytes 100-199/1000"));
    assert_eq!(response.body, content(3, 100..200));
    assert_eq!(
        only_request(&server).if_range.as_deref(),
        Some("\"an-older-version\"")
    );
}

#[test]
fn delay_headers_answers_late_or_never() {
    let delay = Duration::from_millis(300);
    let server = server_with(
        vec![FileSpec::new("/f", 1000, 3)],
        vec![
            FaultRule::new(
                When::Nth(0),
                Fault::DelayHeaders {
                    duration: Some(delay),
                },
            ),
            FaultRule::new(When::Nth(1), Fault::DelayHeaders { duration: None }),
        ],
    );
    let mut client = Client::connect(&server);
    let started = Instant::now();
    let late = client.get("/f", &[("Range", "bytes=0-9")]);
    assert!(started.elapsed() >= delay, "{:?}", started.elapsed());
    assert_eq!((late.status, late.body), (206, content(3, 0..10)));

    let mut silent = Client::connect(&server);
    silent
        .stream
        .set_read_timeout(Some(Duration::from_millis(300)))
        .expect("set timeout");
    silent.send("GET", "/f", &[]);
    let nothing = silent.fill_pending();
    assert!(
        matches!(
            nothing.as_ref().map_err(|e| e.kind()),
            Err(ErrorKind::WouldBlock | ErrorKind::TimedOut)
        ),
        "{nothing:?}"
    );
    // The request was read and logged; only the answer is held back.
    assert_eq!(server.requests().len(), 2);
    assert_eq!(server.requests()[1].body_bytes, 0);
    drop(server);
    silent
        .stream
        .set_read_timeout(Some(READ_TIMEOUT))
        .expect("set timeout");
    assert!(silent.is_closed(), "shutdown closes the silent connection");
    assert!(silent.pending.is_empty(), "not a byte was sent");
}

#[test]
fn gzip_compresses_the_body_and_counts_wire_bytes() {
    let server = server_with(
        vec![FileSpec::new("/f", 100_000, 3)],
        vec![
            FaultRule::always(Fault::Gzip),
            FaultRule::new(When::Nth(1), Fault::IgnoreRange),
        ],
    );
    let mut client = Client::connect(&server);
    let range = client.get("/f", &[("Range", "bytes=1000-10999")]);
    assert_eq!(range.status, 206);
    assert_eq!(range.header("content-encoding"), Some("gzip"));
    assert_eq!(
        range.header("content-range"),
        Some("bytes 1000-10999/100000")
    );
    assert_eq!(range.content_length(), range.body.len());
    assert_eq!(range.body[..2], [0x1f, 0x8b], "gzip magic");
    assert_eq!(gunzip(&range.body), content(3, 1000..11_000));

    // IgnoreRange and Gzip: Apache's force-gzip.
    let forced = client.get("/f", &[("Range", "bytes=1000-10999")]);
    assert_eq!(forced.status, 200);
    assert_eq!(forced.header("content-range"), None);
    assert_eq!(forced.header("content-encoding"), Some("gzip"));
    assert_eq!(gunzip(&forced.body), content(3, 0..100_000));
    assert_ne!(forced.body.len(), 100_000);

    let head = client.exchange("HEAD", "/f", &[]);
    assert_eq!(head.header("content-encoding"), Some("gzip"));
    assert_eq!(head.content_length(), forced.body.len());

    let body_bytes: Vec<u64> = server.requests().iter().map(|r| r.body_bytes).collect();
    let wire = [range.body.len() as u64, forced.body.len() as u64, 0];
    assert_eq!(body_bytes, wire);
    assert_eq!(server.body_bytes_sent(), wire.iter().sum::<u64>());
}

#[test]
fn gzip_cuts_count_compressed_bytes() {
    let server = server_with(
        vec![FileSpec::new("/f", 100_000, 3)],
        vec![
            FaultRule::always(Fault::Gzip),
            FaultRule::new(When::Nth(1), Fault::CloseAfter { bytes: 1000 }),
        ],
    );
    let whole = Client::connect(&server).get("/f", &[]);
    let mut client = Client::connect(&server);
    let cut = client.start("/f", &[]);
    assert_eq!(cut.content_length(), whole.body.len());
    let (body, error) = client.read_body(whole.body.len());
    assert_eq!(error.map(|e| e.kind()), Some(ErrorKind::UnexpectedEof));
    assert_eq!(body, whole.body[..1000]);
    assert_eq!(server.requests()[1].body_bytes, 1000);
}

#[test]
fn transfer_gzip_sends_a_gzipped_chunked_body() {
    let server = server_with(
        vec![FileSpec::new("/f", 100_000, 3)],
        vec![FaultRule::new(When::Nth(0), Fault::TransferGzip)],
    );
    let mut client = Client::connect(&server);
    let response = client.start("/f", &[("Range", "bytes=0-49999")]);
    assert_eq!(response.status, 206);
    assert_eq!(response.header("transfer-encoding"), Some("gzip, chunked"));
    assert_eq!(response.header("content-length"), None);
    assert_eq!(response.header("content-encoding"), None);
    assert_eq!(
        response.header("content-range"),
        Some("bytes 0-49999/100000")
    );
    let (data, sizes, wire_len) = client.read_chunked();
    let (full_chunks, tail) = sizes.split_at(sizes.len() - 2);
    assert!(
        full_chunks.iter().all(|size| *size == 16 * 1024),
        "{sizes:?}"
    );
    assert!((1..=16 * 1024).contains(&tail[0]), "{sizes:?}");
    assert_eq!(tail[1], 0);
    assert_eq!(gunzip(&data), content(3, 0..50_000));
    assert_eq!(server.requests()[0].body_bytes, wire_len as u64);
    // The zero chunk ended the message: the connection is reusable.
    assert_eq!(
        client.get("/f", &[("Range", "bytes=0-9")]).body,
        content(3, 0..10)
    );
}

#[test]
fn etag_by_connection_gives_each_backend_its_own_etag() {
    let etags = ["\"inode-1\"", "\"inode-2\"", "\"inode-3\""];
    let server = server_with(
        vec![FileSpec::new("/f", 1000, 3)],
        vec![FaultRule::always(Fault::EtagByConnection {
            etags: etags.iter().map(|etag| (*etag).to_owned()).collect(),
        })],
    );
    let mut seen = Vec::new();
    let mut modified = Vec::new();
    for _ in 0..4 {
        let mut client = Client::connect(&server);
        // Both requests of a connection reach the same backend.
        let first = client.get("/f", &[("Range", "bytes=0-9")]);
        let second = client.exchange("HEAD", "/f", &[]);
        assert_eq!(first.header("etag"), second.header("etag"));
        seen.push(first.header("etag").map(str::to_owned));
        modified.push(first.header("last-modified").map(str::to_owned));
    }
    let expected: Vec<Option<String>> = [0, 1, 2, 0]
        .iter()
        .map(|idx| Some(etags[*idx].to_owned()))
        .collect();
    assert_eq!(seen, expected);
    assert!(modified.iter().all(|date| *date == modified[0]));
    // The fifth connection reaches backend 2, whose ETag alone satisfies If-Range.
    let mut client = Client::connect(&server);
    let range = ("Range", "bytes=100-199");
    let other = client.get("/f", &[range, ("If-Range", etags[0])]);
    assert_eq!((other.status, other.body.len()), (200, 1000));
    let same = client.get("/f", &[range, ("If-Range", etags[1])]);
    assert_eq!((same.status, same.body), (206, content(3, 100..200)));
}
