//! Streaming a member out of a zip: stored and deflated members read through
//! `Archive::member_reader` give exactly the bytes `read_member` gives, in any read sizes; a
//! member whose data inflates short is an `InvalidData` error, not a silent truncation.

use std::io::Read;

use ipsw::archive::{Archive, Method};
use ipsw::zipwrite::ZipWriter;

fn pattern(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i % 251) as u8 ^ (i >> 11) as u8)
        .collect()
}

fn zip(members: &[(&str, &[u8], Method)]) -> Vec<u8> {
    let mut w = ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, data, method) in members {
        w.add_bytes(name, data, *method).unwrap();
    }
    w.finish().unwrap().into_inner()
}

fn read_all(mut r: impl Read, step: usize) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; step];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            return Ok(out);
        }
        out.extend_from_slice(&buf[..n]);
    }
}

#[test]
fn stored_and_deflated_members_stream_their_exact_bytes() {
    let big = pattern(700_001);
    let small = pattern(513);
    let bytes = zip(&[
        ("os.dmg", &big, Method::Stored),
        ("ramdisk.dmg", &big, Method::Deflated),
        ("empty", &[], Method::Stored),
        ("small.im4p", &small, Method::Deflated),
    ]);
    let archive = Archive::read(bytes.as_slice(), bytes.len() as u64, "t.zip".as_ref()).unwrap();
    for name in ["os.dmg", "ramdisk.dmg", "empty", "small.im4p"] {
        let whole = archive
            .read_member(bytes.as_slice(), name, 1 << 30)
            .unwrap();
        for step in [1, 511, 64 << 10] {
            let reader = archive.member_reader(bytes.as_slice(), name).unwrap();
            assert_eq!(reader.remaining(), whole.len() as u64);
            if step == 1 && whole.len() > 100_000 {
                continue; // byte-at-a-time over 700 KB proves nothing more
            }
            assert_eq!(read_all(reader, step).unwrap(), whole, "{name} by {step}");
        }
    }
    assert!(archive.member_reader(bytes.as_slice(), "absent").is_err());
}

#[test]
fn a_member_that_inflates_short_is_an_error() {
    let data = pattern(10_000);
    let mut w = ZipWriter::new(std::io::Cursor::new(Vec::new()));
    // Deflated bytes of 10 000 bytes, declared as 20 000.
    let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut enc, &data).unwrap();
    let body = enc.finish().unwrap();
    w.add_raw("liar", 8, crc32fast::hash(&data), &body, 20_000)
        .unwrap();
    let bytes = w.finish().unwrap().into_inner();
    let archive = Archive::read(bytes.as_slice(), bytes.len() as u64, "t.zip".as_ref()).unwrap();
    let err = read_all(
        archive.member_reader(bytes.as_slice(), "liar").unwrap(),
        4096,
    )
    .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
}
