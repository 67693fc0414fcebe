//! Replays the committed fuzz corpora through the fuzz targets' bodies, so the normal test run
//! exercises them on stable.

use std::path::{Path, PathBuf};

fn corpus(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target)
}

fn replay(target: &str, run: fn(&[u8]), at_least: usize) {
    let dir = corpus(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        run(&std::fs::read(&path).unwrap());
        n += 1;
    }
    assert!(n >= at_least, "only {n} files in {}", dir.display());
}

#[test]
fn fault_spec_corpus() {
    replay("fault_spec", sim::fuzzing::fault_spec, 10);
}

#[test]
fn recovery_command_corpus() {
    replay("recovery_command", sim::fuzzing::recovery_command, 10);
}

/// Writes the seed corpus of `recovery_command`: every command a restore sends, plus nasty
/// ones. Run once with `cargo test -p sim --test fuzz_corpus -- --ignored write_seed_corpus`.
#[test]
#[ignore]
fn write_seed_corpus() {
    let mut seeds: Vec<Vec<u8>> = [
        "getenv build-version",
        "getenv auto-boot",
        "setenv auto-boot false",
        "setenv boot-args rd=md0 nand-enable-reformat=1 -progress",
        "setenv x",
        "saveenv",
        "bgcolor 255 128 0",
        "bgcolor 0 0 0 extra",
        "setpicture 4",
        "go",
        "bootx",
        "reboot",
        "reset",
        "ramdisk",
        "devicetree",
        "firmware",
        "rsepfirmware",
        "frobnicate now please",
        "   padded   words   ",
        "bgcolor 256 0 0",
        "bgcolor 1 2",
        "bgcolor -1 2 3",
        "setpicture 99999999999",
        "getenv",
        "setenv",
    ]
    .iter()
    .map(|s| {
        let mut b = s.as_bytes().to_vec();
        b.push(0);
        b
    })
    .collect();
    seeds.push(Vec::new());
    seeds.push(vec![0]);
    seeds.push(b"go \xff\xfe\0".to_vec());
    seeds.push(vec![b'a'; 300]);
    seeds.push(b"setenv a b\0trailing garbage after the NUL".to_vec());
    seeds.push("setenv name \u{e9}t\u{e9}".as_bytes().to_vec());
    let dir = corpus("recovery_command");
    std::fs::create_dir_all(&dir).unwrap();
    for (i, seed) in seeds.iter().enumerate() {
        std::fs::write(dir.join(format!("seed-{i:02}")), seed).unwrap();
    }
}

#[test]
fn asr_plist_corpus() {
    replay("asr_plist", sim::fuzzing::asr_plist, 10);
}

#[test]
fn asr_sink_corpus() {
    replay("asr_sink", sim::fuzzing::asr_sink, 10);
}

fn asr_dict(pairs: &[(&str, plist::Value)]) -> Vec<u8> {
    let d: plist::Dictionary = pairs
        .iter()
        .map(|(k, v)| ((*k).to_string(), v.clone()))
        .collect();
    sim::asr::encode(&d).unwrap()
}

/// Writes the seed corpora of `asr_plist` and `asr_sink`: every ASR message both sides send,
/// a whole small stream, and nasty ones (no closing line, a closing line inside garbage, a
/// plist that is not a dictionary, wrong checksums, a short stream). Run once with
/// `cargo test -p sim --test fuzz_corpus -- --ignored write_asr_seed_corpus`.
#[test]
#[ignore]
fn write_asr_seed_corpus() {
    use plist::Value;
    use sha1::Digest;
    let initiate = asr_dict(&[
        ("Command", Value::from("Initiate")),
        ("Checksum Chunks", Value::from(true)),
        ("Version", Value::from(1u64)),
    ]);
    let oob = asr_dict(&[
        ("Command", Value::from("OOBData")),
        ("OOB Offset", Value::from(0u64)),
        ("OOB Length", Value::from(512u64)),
    ]);
    let payload_cmd = asr_dict(&[("Command", Value::from("Payload"))]);
    let info = |size: u64, chunk: u64| {
        let payload: plist::Dictionary = [
            ("Port".to_string(), Value::from(1u64)),
            ("Size".to_string(), Value::from(size)),
        ]
        .into_iter()
        .collect();
        asr_dict(&[
            ("Checksum Chunk Size", Value::from(chunk)),
            ("FEC Slice Stride", Value::from(40u64)),
            ("Packet Payload Size", Value::from(1450u64)),
            ("Packets Per FEC", Value::from(25u64)),
            ("Payload", Value::Dictionary(payload)),
            ("Stream ID", Value::from(1u64)),
            ("Version", Value::from(1u64)),
        ])
    };
    // A whole host stream for a 600-byte image in 256-byte chunks (OOB: the first 512).
    let image: Vec<u8> = (0..600u32).map(|i| (i * 7 % 256) as u8).collect();
    let mut stream = info(600, 256);
    stream.extend_from_slice(&image[..512]);
    for chunk in image.chunks(256) {
        stream.extend_from_slice(chunk);
        stream.extend_from_slice(&sha1::Sha1::digest(chunk));
    }
    let mut bad_sum = stream.clone();
    let last = bad_sum.len() - 1;
    bad_sum[last] ^= 1;

    let mut plist_seeds: Vec<Vec<u8>> = vec![
        initiate.clone(),
        oob.clone(),
        payload_cmd.clone(),
        info(1 << 30, 131072),
        [initiate.clone(), oob.clone(), payload_cmd.clone()].concat(),
        [payload_cmd.clone(), b"raw image bytes follow".to_vec()].concat(),
        initiate[..initiate.len() - 1].to_vec(),
        b"garbage</plist>\n".to_vec(),
        b"<?xml version=\"1.0\"?><plist><array/></plist>\n".to_vec(),
        b"<plist><dict><key>a</key></dict></plist>\n".to_vec(),
        vec![b'<'; 70_000],
        Vec::new(),
    ];
    // The first byte of each asr_plist input is how many raw bytes to take after a plist.
    for s in plist_seeds.iter_mut() {
        s.insert(0, 22);
    }
    let sink_seeds: Vec<Vec<u8>> = vec![
        stream.clone(),
        bad_sum,
        stream[..stream.len() - 100].to_vec(),
        [stream.clone(), b"extra".to_vec()].concat(),
        info(0, 131072),
        info(10, 0),
        info(10, 1 << 30),
        asr_dict(&[("Payload", Value::from("not a dict"))]),
        initiate,
        vec![0xFF; 300],
    ];
    for (target, seeds) in [("asr_plist", plist_seeds), ("asr_sink", sink_seeds)] {
        let dir = corpus(target);
        std::fs::create_dir_all(&dir).unwrap();
        for (i, seed) in seeds.iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{i:02}")), seed).unwrap();
        }
    }
}
