//! Metalink input: `get FILE.meta4` / `FILE.metalink` / a URL ending so. Its URLs are the
//! primary and the mirrors, its size and SHA-256 the expected values, its file name the
//! output's; a hostile or malformed Metalink is exit 2 with nothing written anywhere.

use std::fs;
use std::path::Path;

use rangefetch_testserver::{FileSpec, TestServer};

use crate::support::{
    MIB, Nginx, NginxOptions, Run, WRONG_SHA256, assert_exit, files_under, run, settled_body_bytes,
    sha256_bytes, sha256_file, tempdir,
};

/// A Metalink 4 document for one file.
struct Meta4<'a> {
    name: &'a str,
    size: Option<u64>,
    sha256: Option<&'a str>,
    /// (url, priority)
    urls: Vec<(String, u32)>,
    /// Piece length and the file's bytes, for `<pieces type="sha-256">`.
    pieces: Option<(usize, &'a [u8])>,
}

impl Meta4<'_> {
    fn render(&self) -> String {
        let mut body = String::new();
        if let Some(size) = self.size {
            body.push_str(&format!("    <size>{size}</size>\n"));
        }
        if let Some(sha256) = self.sha256 {
            body.push_str(&format!("    <hash type=\"sha-256\">{sha256}</hash>\n"));
        }
        if let Some((length, bytes)) = self.pieces {
            body.push_str(&format!(
                "    <pieces length=\"{length}\" type=\"sha-256\">\n"
            ));
            for piece in bytes.chunks(length) {
                body.push_str(&format!("      <hash>{}</hash>\n", sha256_bytes(piece)));
            }
            body.push_str("    </pieces>\n");
        }
        for (url, priority) in &self.urls {
            let url = url.replace('&', "&amp;");
            body.push_str(&format!(
                "    <url location=\"de\" priority=\"{priority}\">{url}</url>\n"
            ));
        }
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
             <metalink xmlns=\"urn:ietf:params:xml:ns:metalink\">\n\
             \x20 <generator>rangefetch tests</generator>\n\
             \x20 <file name=\"{}\">\n{body}  </file>\n</metalink>\n",
            self.name
        )
    }
}

/// The bytes a test server serves for `file`.
fn content(file: &FileSpec) -> Vec<u8> {
    rangefetch_testserver::content(file.seed, 0..file.size)
}

/// `root/work/` with `name` holding `document`; the run happens in `work`.
fn workdir(root: &Path, name: &str, document: &[u8]) -> std::path::PathBuf {
    let work = root.join("work");
    fs::create_dir(&work).expect("create the work directory");
    fs::write(work.join(name), document).expect("write the Metalink");
    work
}

/// The files under `root` other than the Metalink itself: nothing may have been written.
fn written(root: &Path, metalink: &str) -> Vec<std::path::PathBuf> {
    files_under(root)
        .into_iter()
        .filter(|path| path.file_name().is_none_or(|name| name != metalink))
        .collect()
}

/// `primary` got the download's probe (a range of the first chunk), `mirror` a mirror's
/// two-byte probe first.
fn assert_primary(primary: &TestServer, mirror: &TestServer) {
    let first_range = |server: &TestServer| server.requests().first().and_then(|r| r.range.clone());
    let (primary_range, mirror_range) = (first_range(primary), first_range(mirror));
    assert!(
        primary_range.is_some()
            && primary_range.as_deref() != Some("bytes=0-1")
            && mirror_range.as_deref() == Some("bytes=0-1"),
        "the best URL should be the primary: its first request asked {primary_range:?}, \
         the other's {mirror_range:?}"
    );
}

#[test]
fn two_mirrors_from_a_meta4_verified_and_named_by_it() {
    let size = 16 * MIB;
    let spec = FileSpec::new("/img.bin", size, 401);
    let bytes = content(&spec);
    let first = TestServer::serve(spec.clone());
    let second = TestServer::serve(spec.clone());
    let sha256 = spec.sha256_hex();
    let document = Meta4 {
        name: "disk.img",
        size: Some(size),
        sha256: Some(&sha256),
        urls: vec![
            (second.url("/img.bin?from=metalink&n=2"), 2),
            (first.url("/img.bin"), 1),
            ("ftp://ftp.example.invalid/disk.img".to_owned(), 1),
        ],
        pieces: Some((MIB as usize, &bytes)),
    }
    .render();
    let root = tempdir();
    let work = workdir(root.path(), "disk.img.meta4", document.as_bytes());
    let run = run(
        &work,
        &["get", "disk.img.meta4", "--chunk-size", "1MiB", "--json"],
    );
    assert_eq!(run.code(), 0, "\n{}", run.describe());
    let out = work.join("disk.img");
    assert_eq!(sha256_file(&out), sha256, "\n{}", run.describe());
    let summary = run.json_summary();
    assert_eq!(summary["verified"], true, "{summary}");
    assert_eq!(summary["sha256"], sha256.as_str(), "{summary}");
    let (from_first, from_second) = (settled_body_bytes(&first), settled_body_bytes(&second));
    assert!(
        from_first > 0 && from_second > 0,
        "first mirror sent {from_first}, second {from_second} bytes: both should serve\n{}",
        run.describe()
    );
    assert!(
        from_first + from_second <= size + MIB,
        "{from_first} + {from_second} bytes for a file of {size}\n{}",
        run.describe()
    );
    // The priority-1 URL is the primary: it gets the probe for the first chunk, the other
    // only a mirror's two-byte probe (`bytes=0-1`).
    assert_primary(&first, &second);
    assert!(
        second.requests().iter().all(|r| r.path == "/img.bin"),
        "the second URL's query was mangled: {:#?}",
        second.requests()
    );
    assert!(
        run.stdout.contains("ftp") && run.stdout.contains("left out"),
        "the ftp URL was not reported as left out\n{}",
        run.describe()
    );
    assert_eq!(
        written(root.path(), "disk.img.meta4"),
        [out],
        "only the output may be left"
    );
}

/// Metalink 3: `preference` 100 is the best URL (the primary gets the probe), and a further
/// operand is one more mirror.
#[test]
fn a_metalink3_file_with_preferences_and_an_extra_mirror() {
    let size = 8 * MIB;
    let spec = FileSpec::new("/img.bin", size, 408);
    let best = TestServer::serve(spec.clone());
    let worse = TestServer::serve(spec.clone());
    let extra = TestServer::serve(spec.clone());
    let sha256 = spec.sha256_hex();
    let document = format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n\
         <metalink version=\"3.0\" xmlns=\"http://www.metalinker.org/\">\n\
         <files><file name=\"old.img\"><size>{size}</size>\n\
         <verification><hash type=\"md5\">00112233445566778899aabbccddeeff</hash>\
         <hash type=\"sha256\">{sha256}</hash></verification>\n\
         <resources>\
         <url type=\"http\" preference=\"10\">{}</url>\
         <url type=\"bittorrent\" preference=\"100\">{}</url>\
         <url type=\"http\" preference=\"100\">{}</url>\
         </resources></file></files></metalink>\n",
        worse.url("/img.bin"),
        best.url("/img.torrent"),
        best.url("/img.bin"),
    );
    let root = tempdir();
    let work = workdir(root.path(), "old.metalink", document.as_bytes());
    let run = run(
        &work,
        &[
            "get",
            "old.metalink",
            &extra.url("/img.bin"),
            "--chunk-size",
            "1MiB",
            "-q",
        ],
    );
    assert_eq!(run.code(), 0, "\n{}", run.describe());
    assert_eq!(sha256_file(&work.join("old.img")), sha256);
    assert_primary(&best, &worse);
    assert!(
        best.requests().iter().all(|r| r.path == "/img.bin"),
        "the torrent URL is left out: {:#?}",
        best.requests()
    );
    let total = settled_body_bytes(&best) + settled_body_bytes(&worse) + settled_body_bytes(&extra);
    assert!(
        (size..=size + MIB).contains(&total),
        "{total} bytes served for a file of {size}\n{}",
        run.describe()
    );
    assert!(
        !extra.requests().is_empty(),
        "the extra operand was not used as a mirror\n{}",
        run.describe()
    );
}

#[test]
fn metalink_over_http_with_a_relative_url_and_o() {
    let size = 4 * MIB;
    let spec = FileSpec::new("/img.bin", size, 402);
    let bytes = content(&spec);
    let served = tempdir();
    fs::write(served.path().join("img.bin"), &bytes).expect("write the served file");
    let sha256 = sha256_bytes(&bytes);
    let document = Meta4 {
        name: "from-metalink.img",
        size: Some(size),
        sha256: Some(&sha256),
        urls: vec![("img.bin".to_owned(), 1)],
        pieces: None,
    }
    .render();
    fs::write(served.path().join("img.bin.meta4"), document).expect("write the Metalink");
    let nginx = Nginx::serving_dir(served, &NginxOptions::default());
    let dir = tempdir();
    let run = run(
        dir.path(),
        &[
            "get",
            &nginx.url("/img.bin.meta4"),
            "-o",
            "chosen.img",
            "-q",
        ],
    );
    assert_eq!(run.code(), 0, "\n{}", run.describe());
    assert_eq!(sha256_file(&dir.path().join("chosen.img")), sha256);
    assert!(!dir.path().join("from-metalink.img").exists(), "-o wins");
    let log = nginx.access_log();
    assert!(
        log.iter().any(|line| line.contains("/img.bin.meta4"))
            && log.iter().any(|line| line.contains("GET /img.bin ")),
        "nginx should have served the Metalink and then the file: {log:#?}"
    );
}

#[test]
fn a_metalink_hash_the_bytes_do_not_have_is_exit_3() {
    let size = 2 * MIB;
    let spec = FileSpec::new("/img.bin", size, 403);
    let server = TestServer::serve(spec.clone());
    let document = Meta4 {
        name: "disk.img",
        size: Some(size),
        sha256: Some(WRONG_SHA256),
        urls: vec![(server.url("/img.bin"), 1)],
        pieces: None,
    }
    .render();
    let root = tempdir();
    let work = workdir(root.path(), "disk.meta4", document.as_bytes());
    let run = run(&work, &["get", "disk.meta4", "-q"]);
    assert_exit(&run, 3, true);
    assert!(
        run.stderr.contains(WRONG_SHA256),
        "the error should name the expected hash\n{}",
        run.describe()
    );
    assert!(
        written(root.path(), "disk.meta4").is_empty(),
        "a mismatch must leave no output\n{}",
        run.describe()
    );
}

#[test]
fn a_metalink_size_the_server_does_not_have_is_exit_3() {
    let size = 2 * MIB;
    let spec = FileSpec::new("/img.bin", size, 404);
    let server = TestServer::serve(spec.clone());
    let document = Meta4 {
        name: "disk.img",
        size: Some(size + 1),
        sha256: None,
        urls: vec![(server.url("/img.bin"), 1)],
        pieces: None,
    }
    .render();
    let root = tempdir();
    let work = workdir(root.path(), "disk.meta4", document.as_bytes());
    let run = run(&work, &["get", "disk.meta4", "-q"]);
    assert_exit(&run, 3, true);
    assert!(run.stderr.contains("size mismatch"), "\n{}", run.describe());
    assert!(!work.join("disk.img").exists());
}

#[test]
fn without_a_hash_the_download_is_unverified() {
    let size = MIB;
    let spec = FileSpec::new("/img.bin", size, 405);
    let server = TestServer::serve(spec.clone());
    let document = Meta4 {
        name: "plain.img",
        size: None,
        sha256: None,
        urls: vec![(server.url("/img.bin"), 1)],
        pieces: None,
    }
    .render();
    let root = tempdir();
    let work = workdir(root.path(), "plain.meta4", document.as_bytes());
    let run = run(&work, &["get", "plain.meta4", "--json"]);
    assert_eq!(run.code(), 0, "\n{}", run.describe());
    let summary = run.json_summary();
    assert_eq!(summary["verified"], false, "{summary}");
    assert_eq!(summary["sha256"], spec.sha256_hex().as_str(), "{summary}");
    assert!(
        run.stdout.contains("will not be verified"),
        "\n{}",
        run.describe()
    );
}

#[test]
fn a_sha256_flag_that_disagrees_with_the_metalink_is_exit_3_before_any_request() {
    let spec = FileSpec::new("/img.bin", MIB, 406);
    let server = TestServer::serve(spec.clone());
    let sha256 = spec.sha256_hex();
    let document = Meta4 {
        name: "disk.img",
        size: Some(MIB),
        sha256: Some(&sha256),
        urls: vec![(server.url("/img.bin"), 1)],
        pieces: None,
    }
    .render();
    let root = tempdir();
    let work = workdir(root.path(), "disk.meta4", document.as_bytes());
    let run = run(&work, &["get", "disk.meta4", "--sha256", WRONG_SHA256]);
    assert_exit(&run, 3, true);
    assert!(run.stderr.contains("hash conflict"), "\n{}", run.describe());
    assert!(server.requests().is_empty(), "{:#?}", server.requests());
    // The same hash given twice is fine.
    let run = crate::support::run(&work, &["get", "disk.meta4", "--sha256", &sha256, "-q"]);
    assert_eq!(run.code(), 0, "\n{}", run.describe());
}

/// A hostile or broken Metalink: exit 2, its reason on stderr, no request to the server it
/// names, and nothing written inside or outside the working directory.
fn refused(name: &str, document: &[u8], why: &str) -> Run {
    let root = tempdir();
    let work = workdir(root.path(), name, document);
    let run = run(&work, &["get", name, "-q"]);
    assert_exit(&run, 2, false);
    assert!(
        run.stderr.to_lowercase().contains(&why.to_lowercase()),
        "stderr should say {why:?}\n{}",
        run.describe()
    );
    assert!(
        written(root.path(), name).is_empty(),
        "{:?} written\n{}",
        written(root.path(), name),
        run.describe()
    );
    run
}

#[test]
fn hostile_metalinks_are_refused_and_write_nothing() {
    let server = TestServer::serve(FileSpec::new("/img.bin", MIB, 407));
    let url = server.url("/img.bin");
    let with_name = |name: &str| {
        Meta4 {
            name,
            size: Some(MIB),
            sha256: None,
            urls: vec![(url.clone(), 1)],
            pieces: None,
        }
        .render()
    };
    refused("a.meta4", with_name("../escaped.img").as_bytes(), "unsafe");
    refused(
        "b.meta4",
        with_name("/tmp/absolute.img").as_bytes(),
        "absolute path",
    );
    refused(
        "c.meta4",
        with_name("sub/../../escaped.img").as_bytes(),
        "climbs out",
    );
    let truncated = with_name("ok.img");
    refused(
        "d.meta4",
        &truncated.as_bytes()[..truncated.len() / 2],
        "not well-formed",
    );
    refused(
        "e.metalink",
        b"<html><body>not a metalink</body></html>",
        "not a Metalink document",
    );
    refused(
        "f.meta4",
        br#"<!DOCTYPE m [<!ENTITY x "xxxxxxxxxxxxxxxx">]><metalink xmlns="urn:ietf:params:xml:ns:metalink"/>"#,
        "DOCTYPE",
    );
    let two_files = with_name("one.img").replace(
        "</metalink>",
        "<file name=\"two.img\"><url>http://127.0.0.1:9/two.img</url></file></metalink>",
    );
    refused("g.meta4", two_files.as_bytes(), "describes 2 files");
    let ftp_only = with_name("ftp.img").replace(&url, "ftp://127.0.0.1/ftp.img");
    refused("h.meta4", ftp_only.as_bytes(), "no http or https URL");
    let wrong_pieces = Meta4 {
        name: "pieces.img",
        size: Some(3 * MIB),
        sha256: None,
        urls: vec![(url.clone(), 1)],
        pieces: Some((MIB as usize, &[0; 1024])),
    }
    .render();
    refused("i.meta4", wrong_pieces.as_bytes(), "piece");
    // Larger than any Metalink may be: refused before it is parsed.
    let mut huge = with_name("huge.img").into_bytes();
    huge.resize(33 << 20, b' ');
    refused("j.meta4", &huge, "larger than");
    assert!(
        server.requests().is_empty(),
        "a refused Metalink's URL was requested: {:#?}",
        server.requests()
    );
}

#[test]
fn a_missing_metalink_file_is_exit_2() {
    let dir = tempdir();
    let run = run(dir.path(), &["get", "nowhere.meta4"]);
    assert_exit(&run, 2, false);
    assert!(
        run.stderr.contains("cannot read Metalink nowhere.meta4"),
        "\n{}",
        run.describe()
    );
}

/// Issue 18: with piece hashes, a mirror that flips bytes is caught piece by piece as the
/// pieces land, dropped, and its bad pieces fetched again from the good one: the whole
/// download costs under 1.1× the file, and the final whole-file check is a formality.
#[test]
fn piece_hashes_catch_a_bad_mirror_as_pieces_land() {
    use rangefetch_testserver::{Fault, FaultRule};
    // Dropping the bad mirror costs what its connections had in flight (at most a 1 MiB
    // request each) plus its bad pieces fetched again: a few MiB, whatever the file's size.
    let size = 64 * MIB;
    let spec = FileSpec::new("/img.bin", size, 402);
    let bytes = content(&spec);
    let good = TestServer::serve(spec.clone());
    let flips = (1..64)
        .map(|k| {
            FaultRule::always(Fault::FlipByte {
                offset: k * MIB + 11,
            })
        })
        .collect();
    let bad = crate::support::start_server(vec![spec.clone()], flips);
    let sha256 = spec.sha256_hex();
    let document = Meta4 {
        name: "disk.img",
        size: Some(size),
        sha256: Some(&sha256),
        urls: vec![(good.url("/img.bin"), 1), (bad.url("/img.bin"), 1)],
        pieces: Some((MIB as usize, &bytes)),
    }
    .render();
    let root = tempdir();
    let work = workdir(root.path(), "disk.img.meta4", document.as_bytes());
    let run = run(
        &work,
        &[
            "get",
            "disk.img.meta4",
            "--chunk-size",
            "1MiB",
            "-c",
            "4",
            "--json",
        ],
    );
    assert_eq!(run.code(), 0, "\n{}", run.describe());
    assert_eq!(sha256_file(&work.join("disk.img")), sha256);
    let served = settled_body_bytes(&good) + settled_body_bytes(&bad);
    eprintln!(
        "piece hashes, one bad mirror: served {:.3}× the file",
        served as f64 / size as f64
    );
    assert!(
        served * 10 < size * 11,
        "{served} bytes served for a {size}-byte file ({:.3}×, under 1.1× allowed)\n{}",
        served as f64 / size as f64,
        run.describe()
    );
    assert!(
        settled_body_bytes(&bad) > 0 && run.stdout.contains("does not have its published hash"),
        "the bad mirror served nothing, or no piece was caught\n{}",
        run.describe()
    );
    assert!(
        !run.stdout.contains("looking for the bad stretches"),
        "the final check needed a repair: pieces were not caught as they landed\n{}",
        run.describe()
    );
}

/// RFC 6249: a `Link: <…>; rel=duplicate` header on the primary's response names mirrors;
/// they are probed like any mirror and serve part of the file.
#[test]
fn link_rel_duplicate_headers_become_mirrors() {
    use rangefetch_testserver::{Fault, FaultRule};
    let size = 16 * MIB;
    let spec = FileSpec::new("/img.bin", size, 403);
    let mirror = TestServer::serve(spec.clone());
    let link = format!("<{}>; rel=duplicate; pri=1", mirror.url("/img.bin"));
    let primary = crate::support::start_server(
        vec![spec.clone()],
        vec![FaultRule::always(Fault::SetHeader {
            name: "Link".to_owned(),
            value: link,
        })],
    );
    let sha256 = spec.sha256_hex();
    let root = tempdir();
    let run = run(
        root.path(),
        &[
            "get",
            &primary.url("/img.bin"),
            "--sha256",
            &sha256,
            "--chunk-size",
            "1MiB",
            "-c",
            "4",
            "--json",
        ],
    );
    assert_eq!(run.code(), 0, "\n{}", run.describe());
    assert_eq!(sha256_file(&root.path().join("img.bin")), sha256);
    assert!(run.stdout.contains("rel=duplicate"), "\n{}", run.describe());
    assert!(
        mirror
            .requests()
            .iter()
            .any(|r| r.range.as_deref() == Some("bytes=0-1")),
        "the named mirror was never probed\n{}",
        run.describe()
    );
    assert!(
        settled_body_bytes(&mirror) > 2,
        "the named mirror served no part of the file\n{}",
        run.describe()
    );
}

/// A URL whose name says nothing but whose response is a Metalink (`Content-Type:
/// application/metalink4+xml`, as a mirror redirector's "latest" link answers): the file it
/// describes is downloaded, verified, named by it.
#[test]
fn a_url_answering_with_a_metalink_content_type_is_read_as_one() {
    use std::io::{BufRead, BufReader, Write};
    let size = 4 * MIB;
    let spec = FileSpec::new("/img.bin", size, 404);
    let server = TestServer::serve(spec.clone());
    let sha256 = spec.sha256_hex();
    let document = Meta4 {
        name: "latest.img",
        size: Some(size),
        sha256: Some(&sha256),
        urls: vec![(server.url("/img.bin"), 1)],
        pieces: None,
    }
    .render();
    // A minimal HTTP/1.1 server answering every request with the document.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let answering = std::thread::spawn(move || {
        let mut answered = 0;
        for stream in listener.incoming().take(2) {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/metalink4+xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                document.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(document.as_bytes());
            answered += 1;
        }
        answered
    });
    let dir = tempdir();
    let url = format!("http://127.0.0.1:{port}/download/latest?arch=amd64");
    let run = run(dir.path(), &["get", &url, "--json"]);
    assert_eq!(run.code(), 0, "\n{}", run.describe());
    assert_eq!(sha256_file(&dir.path().join("latest.img")), sha256);
    assert_eq!(run.json_summary()["verified"], true);
    assert_eq!(
        answering.join().expect("server thread"),
        2,
        "probe, then the document"
    );
    assert_eq!(
        written(dir.path(), "none"),
        [dir.path().join("latest.img")],
        "only the output may be left"
    );
}
