//! Replays every seed of every fuzz target (crates/ipsw/fuzz/corpus/<target>/) through the same
//! `ipsw::fuzzing` function the fuzzer calls, so plain `cargo test` exercises them on stable.
//! `cargo test -p ipsw --test fuzz_corpus -- --ignored write_seed_corpus` regenerates the seeds
//! (synthetic only: the real fixtures never go into the corpus).

use std::fs;
use std::path::{Path, PathBuf};

use ipsw::archive::Method;
use ipsw::zipwrite::ZipWriter;
use ipsw::Im4p;

type Target = fn(&[u8]);
const TARGETS: &[(&str, Target)] = &[
    ("manifest", ipsw::fuzzing::manifest),
    ("im4p", ipsw::fuzzing::im4p),
    ("archive", ipsw::fuzzing::archive),
];

fn corpus(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target)
}

#[test]
fn replay_seed_corpus() {
    for (target, run) in TARGETS {
        let dir = corpus(target);
        let mut n = 0;
        for entry in fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            run(&fs::read(&path).unwrap());
            n += 1;
        }
        assert!(n >= 5, "{target}: only {n} seeds");
    }
}

fn nasty(valid: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut v = vec![
        ("empty".into(), Vec::new()),
        ("half".into(), valid[..valid.len() / 2].to_vec()),
        (
            "minus1".into(),
            valid[..valid.len().saturating_sub(1)].to_vec(),
        ),
    ];
    let mut flipped = valid.to_vec();
    for i in (0..flipped.len()).step_by(97) {
        flipped[i] ^= 0xA5;
    }
    v.push(("flipped".into(), flipped));
    v
}

#[test]
#[ignore = "run by hand to regenerate the seed corpus"]
fn write_seed_corpus() {
    let dir = tempfile::tempdir().unwrap();
    let mut seeds: Vec<(&str, String, Vec<u8>)> = Vec::new();
    // Manifests: the synthesizer's, for each era, XML and binary, plus broken variants.
    for product in ["iPhone7,2", "iPhone10,3", "iPhone14,3"] {
        let out = dir.path().join("s.ipsw");
        let p = ipsw::profile::profile(product).unwrap();
        ipsw::synth::synthesize(p, &ipsw::synth::SynthOptions { os_size: 4096 }, &out).unwrap();
        let (file, archive) = ipsw::archive::Archive::open(&out).unwrap();
        let xml = archive
            .read_member(&file, "BuildManifest.plist", 1 << 24)
            .unwrap();
        let value = plist::Value::from_reader_xml(xml.as_slice()).unwrap();
        let mut bin = Vec::new();
        plist::to_writer_binary(&mut bin, &value).unwrap();
        let tag = product.replace(',', "_");
        for (name, bytes) in nasty(&xml) {
            seeds.push(("manifest", format!("{tag}-xml-{name}"), bytes));
        }
        seeds.push(("manifest", format!("{tag}-xml"), xml.clone()));
        seeds.push(("manifest", format!("{tag}-binary"), bin));
        let text = String::from_utf8(xml).unwrap();
        seeds.push((
            "manifest",
            format!("{tag}-bad-chip"),
            text.replacen("0x", "0xZZ", 1).into_bytes(),
        ));
        seeds.push((
            "manifest",
            format!("{tag}-behavior"),
            text.replace(">Erase<", ">Wipe<").into_bytes(),
        ));
        seeds.push((
            "manifest",
            format!("{tag}-short-digest"),
            text.replacen("<data>", "<data>AAAA", 1).into_bytes(),
        ));
    }
    // IM4P.
    for (kind, size) in [
        ("ibss", 0usize),
        ("krnl", 100),
        ("rdsk", 300),
        ("sepi", 70_000),
    ] {
        let der = Im4p::new(kind, "synthetic", vec![0x5A; size]).encode();
        for (name, bytes) in nasty(&der) {
            seeds.push(("im4p", format!("{kind}-{name}"), bytes));
        }
        seeds.push(("im4p", kind.into(), der));
    }
    seeds.push((
        "im4p",
        "huge-length".into(),
        vec![0x30, 0x84, 0x7f, 0xff, 0xff, 0xff, 0x16],
    ));
    seeds.push((
        "im4p",
        "indefinite".into(),
        vec![0x30, 0x80, 0x16, 0x04, b'I', b'M', b'4', b'P', 0, 0],
    ));
    // Zips: small, with stored and deflated members, and broken ones.
    let mut w = ZipWriter::new(std::io::Cursor::new(Vec::new()));
    w.add_bytes("BuildManifest.plist", b"<plist/>", Method::Deflated)
        .unwrap();
    w.add_bytes(
        "Firmware/dfu/iBSS.x.im4p",
        &Im4p::new("ibss", "x", vec![1; 64]).encode(),
        Method::Stored,
    )
    .unwrap();
    let zip = w.finish().unwrap().into_inner();
    for (name, bytes) in nasty(&zip) {
        seeds.push(("archive", format!("small-{name}"), bytes));
    }
    seeds.push(("archive", "small".into(), zip));
    let mut w = ZipWriter::new(std::io::Cursor::new(Vec::new()));
    w.add_bytes("../evil", b"x", Method::Stored).unwrap();
    seeds.push((
        "archive",
        "zip-slip".into(),
        w.finish().unwrap().into_inner(),
    ));
    let mut w = ZipWriter::new(std::io::Cursor::new(Vec::new()));
    w.add_bytes("a", b"x", Method::Stored).unwrap();
    w.add_bytes("a", b"y", Method::Stored).unwrap();
    seeds.push((
        "archive",
        "duplicate".into(),
        w.finish().unwrap().into_inner(),
    ));
    let mut w = ZipWriter::new(std::io::Cursor::new(Vec::new()));
    w.add_raw("bomb", 8, 0, &[0x03, 0x00], 1 << 40).unwrap();
    seeds.push(("archive", "bomb".into(), w.finish().unwrap().into_inner()));

    for (target, _) in TARGETS {
        let d = corpus(target);
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
    }
    for (target, name, bytes) in seeds {
        fs::write(corpus(target).join(name), bytes).unwrap();
    }
}
