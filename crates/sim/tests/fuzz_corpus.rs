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
