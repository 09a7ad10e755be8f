//! The body codings of `Fault::Gzip` and `Fault::TransferGzip`: real gzip (flate2's
//! miniz_oxide backend) and HTTP/1.1 chunked framing, both on bodies held in memory, since the
//! encoded length must be known before the head is sent.

use std::io::Write as _;

use flate2::Compression;
use flate2::write::GzEncoder;

/// The data size of every chunk but the last in a chunked body.
pub(crate) const CHUNK_BYTES: usize = 16 * 1024;

/// `bytes` gzip-compressed at the fastest level. flate2's default header has no file name and
/// an mtime of 0, so the output depends on the input only.
pub(crate) fn gzip(bytes: &[u8]) -> Vec<u8> {
    // Seeded content does not compress: stored blocks add a few bytes per 64 KiB, plus 18 of
    // header and trailer.
    let capacity = bytes.len() + bytes.len() / 1024 + 64;
    let mut encoder = GzEncoder::new(Vec::with_capacity(capacity), Compression::fast());
    encoder
        .write_all(bytes)
        .expect("writing to a Vec cannot fail");
    encoder.finish().expect("writing to a Vec cannot fail")
}

/// `bytes` as an HTTP/1.1 chunked body: chunks of [`CHUNK_BYTES`] (the last one shorter), the
/// zero-size last chunk, and no trailers.
pub(crate) fn chunked(bytes: &[u8]) -> Vec<u8> {
    let mut framed = Vec::with_capacity(bytes.len() + bytes.len() / CHUNK_BYTES * 8 + 16);
    for chunk in bytes.chunks(CHUNK_BYTES) {
        framed.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        framed.extend_from_slice(chunk);
        framed.extend_from_slice(b"\r\n");
    }
    framed.extend_from_slice(b"0\r\n\r\n");
    framed
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;

    use flate2::read::GzDecoder;

    use super::*;
    use crate::content;

    #[test]
    fn gzip_round_trips_and_is_deterministic() {
        for len in [0, 1, 100_000] {
            let original = content(3, 0..len);
            let compressed = gzip(&original);
            assert_eq!(compressed, gzip(&original));
            assert_eq!(compressed[..2], [0x1f, 0x8b], "gzip magic");
            let mut decompressed = Vec::new();
            GzDecoder::new(compressed.as_slice())
                .read_to_end(&mut decompressed)
                .expect("valid gzip");
            assert_eq!(decompressed, original);
        }
    }

    #[test]
    fn chunked_frames_in_fixed_chunks() {
        assert_eq!(chunked(b""), b"0\r\n\r\n");
        assert_eq!(chunked(b"abc"), b"3\r\nabc\r\n0\r\n\r\n");
        let data = vec![7u8; CHUNK_BYTES + 1];
        let framed = chunked(&data);
        let expected = [
            b"4000\r\n".as_slice(),
            &data[..CHUNK_BYTES],
            b"\r\n1\r\n\x07\r\n0\r\n\r\n",
        ]
        .concat();
        assert_eq!(framed, expected);
    }
}
