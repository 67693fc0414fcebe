//! Replays the committed seed corpora of the `serial` and `nonces` fuzz targets through the same
//! `irecv::fuzzing` functions the targets call, so a plain `cargo test` runs them on stable.
//!
//! The seeds are written by the ignored test `write_seed_corpus`:
//! `cargo test -p irecv --test fuzz_corpus_serial -- --ignored write_seed_corpus`.

use std::fs;
use std::path::{Path, PathBuf};

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target)
}

fn replay(target: &str, run: fn(&[u8])) -> usize {
    let dir = corpus_dir(target);
    let mut n = 0;
    for entry in fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        run(&fs::read(&path).unwrap());
        n += 1;
    }
    n
}

#[test]
fn serial_corpus() {
    let n = replay("serial", irecv::fuzzing::serial);
    assert!(n >= 20, "only {n} seeds for the serial target");
}

#[test]
fn nonces_corpus() {
    let n = replay("nonces", irecv::fuzzing::nonces);
    assert!(n >= 8, "only {n} seeds for the nonces target");
}

/// Serial strings of every shape seen on real devices, plus nasty ones.
fn serial_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let mut seeds: Vec<(&'static str, Vec<u8>)> = [
        ("iphone2g-recovery", "CPID:8900 CPRV:20 CPFM:03 SCEP:03 BDID:00 ECID:000001234ABCDEF0 SRNM:[5K8201ABCDE] IMEI:[011223004455667]"),
        ("a5-dfu", "CPID:8940 CPRV:21 CPFM:03 SCEP:01 BDID:06 ECID:0000038500106D8C IBFL:00 SRTG:[iBoot-838.3]"),
        ("a7-recovery", "CPID:8960 CPRV:11 CPFM:03 SCEP:01 BDID:00 ECID:000012345678ABCD IBFL:1D SRNM:[F2LN1234ABCD] IMEI:[013977000123456]"),
        ("a7-dfu", "CPID:8960 CPRV:11 CPFM:03 SCEP:01 BDID:0A ECID:000006758A8BB9E8 IBFL:1C SRTG:[iBoot-1704.10]"),
        ("a8-dfu", "CPID:7000 CPRV:11 CPFM:03 SCEP:01 BDID:00 ECID:00022D3C10981026 IBFL:1C SRTG:[iBoot-1992.0.0.1.19]"),
        ("a9-dfu", "CPID:8000 CPRV:20 CPFM:03 SCEP:01 BDID:06 ECID:0000038A1B2C3D4E IBFL:1C SRTG:[iBoot-2234.0.0.3.3]"),
        ("a10-dfu", "CPID:8010 CPRV:11 CPFM:03 SCEP:01 BDID:0C ECID:0002213824536326 IBFL:3C SRTG:[iBoot-2696.0.0.1.33]"),
        ("a11-pwnd", "CPID:8015 CPRV:11 CPFM:03 SCEP:01 BDID:02 ECID:0016519820F8402E IBFL:3C SRTG:[iBoot-3332.0.0.1.23] PWND:[checkm8]"),
        ("a15-sdom-first", "SDOM:01 CPID:8110 CPRV:11 CPFM:03 SCEP:01 BDID:0E ECID:001A2B3C4D5E6F70 IBFL:3C SRTG:[iBoot-7429.0.0.0.1]"),
        ("a15-redacted", "SDOM:01 CPID:8110 CPRV:11 CPFM:03 SCEP:01 BDID:0A ECID:[redacted] IBFL:3C SRTG:[iBoot-6338.0.0.200.19]"),
        ("rom-tag", "SDOM:01 CPID:8120 CPRV:11 CPFM:03 SCEP:01 BDID:0C ECID:000A1B2C3D4E5F60 IBFL:3C SRTG:[rom]"),
        ("masked-stars", "CPID:8020 CPRV:11 CPFM:03 SCEP:01 BDID:0E ECID:**** IBFL:3C"),
        ("masked-x", "CPID:8000 CPRV:20 CPFM:03 SCEP:01 BDID:06 ECID:0000038xxxx IBFL:1C"),
        ("masked-X16", "CPID:8030 BDID:04 ECID:XXXXXXXXXXXXXXXX"),
        ("demoted", "CPID:8010 CPRV:11 CPFM:03 SCEP:01 BDID:08 ECID:0000000000000001 IBFL:0C"),
        ("no-values", "CPID: CPRV:11 SRTG: BDID:0C IMEI:"),
        ("duplicates", "CPID:8010 CPID:8020 ECID:xxxx ECID:0000000000000002 PWND:[a] PWND:[b]"),
        ("brackets-spaces", "  CPID:8960\t\tSRNM:[F2LN 1234 ABCD]   IMEI:[35 123456 789012 3]\r\n"),
        ("unterminated", "CPID:8010 SRTG:[iBoot-2696.0.0.1.33 BDID:0C"),
        ("empty-brackets", "CPID:8010 SRNM:[] SRTG:[] X:[]"),
        ("hex-prefix", "CPID:0x8010 BDID:0X0C ECID:[0002213824536326]"),
        ("overflow", "CPID:123456789 ECID:00000000000000000001 BDID:FFFFFFFF"),
        ("dfu-product-string", "Apple Mobile Device (DFU Mode)"),
        ("lower-case-tags", "cpid:8010 ecid:0002213824536326"),
        ("colons", ":::: [[[ ]]] CPID::8010 ::"),
        ("long-tag", "ABCDEFGHIJKLMNOPQRSTUVWXYZ:1 CPID:8010"),
        ("irecovery-q-style", "CPID: 0x8960\nCPRV: 0x11\nBDID: 0x02\nECID: 0x000001b64e95fe34\n"),
        ("empty", ""),
    ]
    .into_iter()
    .map(|(name, s)| (name, s.as_bytes().to_vec()))
    .collect();

    let mut nul_padded = b"CPID:8010 BDID:0C ECID:0002213824536326".to_vec();
    nul_padded.extend_from_slice(&[0; 32]);
    seeds.push(("nul-padded", nul_padded));
    seeds.push((
        "non-utf8",
        b"\xff\xfeCPID:8010 \xc3\x28 SRNM:[AB\xffCD] BDID:0C\x80 ECID:00000000DEADBEEF \xe2\x82"
            .to_vec(),
    ));
    seeds.push(("utf16le", {
        "CPID:8010 BDID:0C"
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect()
    }));
    let mut big = b"CPID:8010 CPRV:11 BDID:0C ".to_vec();
    while big.len() < 10 * 1024 {
        big.extend_from_slice(b"ZZZZ:[padding padding] QQ:x ");
    }
    big.extend_from_slice(b"ECID:0002213824536326");
    seeds.push(("ten-kilobytes", big));
    let mut long_value = b"CPID:8010 SRNM:[".to_vec();
    long_value.extend(std::iter::repeat_n(b'A', 10_000));
    seeds.push(("long-bracket", long_value));
    seeds.push(("all-ff", vec![0xFF; 256]));
    // Around the caps (4 KiB, 256 fields): a field straddling byte 4096, one ending on it,
    // a blank tail past it, too many fields.
    let mut across = b"CPID:8010 PAD:[".to_vec();
    across.resize(4086 - 2, b'p');
    across.extend_from_slice(b"] ECID:0002213824536326 CPRV:11");
    seeds.push(("field-across-cap", across));
    let mut on = b"CPID:8010 PAD:[".to_vec();
    on.resize(4075 - 2, b'p');
    on.extend_from_slice(b"] ECID:0002213824536326 CPRV:11");
    seeds.push(("field-ending-on-cap", on));
    let mut blank = b"CPID:8010 SRTG:[iBoot ".to_vec();
    blank.extend(std::iter::repeat_n(0u8, 6000));
    seeds.push(("blank-tail", blank));
    let many: String = (0..300).map(|i| format!("T{i}:{i} ")).collect();
    seeds.push((
        "many-fields",
        format!("CPID:8010 {many}ECID:1").into_bytes(),
    ));
    seeds
}

fn nonce_seeds() -> Vec<(&'static str, Vec<u8>)> {
    [
        ("dfu-nonc-only", " NONC:977A728CA4DEC7636470F3A78D2D8DD9A2542C95"),
        ("both-32-20", "NONC:ff1072eaf0ecfa0c00a385c5ca58e6f1ac98e9d108aae63c81d22f5596b6e827 SNON:9586faea02680eed6e7686dbdcecba6a34b808f3"),
        ("snon-only", "SNON:532d2e493a7b05cf8adc44e97dd382a6d6dc3b31"),
        ("apple-inc", "Apple Inc."),
        ("odd-length", "NONC:ABC SNON:00"),
        ("not-hex", "NONC:xyz"),
        ("empty-value", "NONC: SNON:"),
        ("bracketed", "NONC:[0102] SNON:[0304]"),
        ("duplicates", "NONC:01 NONC:02 SNON:03 SNON:zz"),
        ("with-serial-fields", "CPID:8010 NONC:0102030405 ECID:1"),
        ("empty", ""),
    ]
    .into_iter()
    .map(|(name, s)| (name, s.as_bytes().to_vec()))
    .collect()
}

#[test]
fn seeds_pass_the_invariants() {
    for (_, seed) in serial_seeds() {
        irecv::fuzzing::serial(&seed);
    }
    for (_, seed) in nonce_seeds() {
        irecv::fuzzing::nonces(&seed);
    }
}

#[test]
#[ignore = "writes the seed corpus into fuzz/corpus; run once after changing the seeds"]
fn write_seed_corpus() {
    for (target, seeds) in [("serial", serial_seeds()), ("nonces", nonce_seeds())] {
        let dir = corpus_dir(target);
        fs::create_dir_all(&dir).unwrap();
        for (name, bytes) in seeds {
            fs::write(dir.join(format!("seed-{name}")), bytes).unwrap();
        }
    }
}
