//! Replays the committed corpora of the recovery/DFU engine fuzz targets (`dfu_status`,
//! `getenv_answer`) through the same functions the fuzz targets call, so a plain `cargo test`
//! exercises them on stable. `write_engine_seed_corpus` (ignored) regenerates the seeds.

use std::path::{Path, PathBuf};

type Target = fn(&[u8]);

const TARGETS: &[(&str, Target)] = &[
    ("dfu_status", irecv::dfu::fuzzing::dfu_status),
    ("getenv_answer", irecv::recovery::fuzzing::getenv_answer),
];

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target)
}

#[test]
fn engine_corpora_replay() {
    for (name, target) in TARGETS {
        let dir = corpus_dir(name);
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            target(&std::fs::read(&path).unwrap());
            n += 1;
        }
        assert!(n >= 8, "only {n} seeds in {}", dir.display());
    }
}

/// Named seed files of one target.
type Seeds = Vec<(&'static str, Vec<u8>)>;

fn seeds() -> Vec<(&'static str, Seeds)> {
    use irecv::dfu::{State, Status, StatusReply};
    use std::time::Duration;
    let reply = |status, ms, state| {
        StatusReply {
            status,
            poll_timeout: Duration::from_millis(ms),
            state,
            string_index: 0,
        }
        .to_bytes()
        .to_vec()
    };
    vec![
        (
            "dfu_status",
            vec![
                ("idle", reply(Status::Ok, 0, State::DfuIdle)),
                ("dnload-idle", reply(Status::Ok, 0, State::DnloadIdle)),
                ("dnbusy-50ms", reply(Status::Ok, 50, State::DnBusy)),
                ("manifest", reply(Status::Ok, 0, State::Manifest)),
                (
                    "error-firmware",
                    reply(Status::ErrFirmware, 0, State::Error),
                ),
                ("max-poll", reply(Status::Ok, 0xff_ffff, State::DnBusy)),
                ("state-byte-error", vec![10]),
                ("state-byte-unknown", vec![11]),
                ("unknown-status", vec![16, 0, 0, 0, 2, 0]),
                ("unknown-state", vec![0, 0, 0, 0, 0xff, 0]),
                ("truncated", vec![0, 0, 0, 0, 5]),
                ("too-long", vec![0, 0, 0, 0, 5, 0, 0]),
                ("empty", vec![]),
            ],
        ),
        (
            "getenv_answer",
            vec![
                (
                    "value",
                    b"rd=md0 nand-enable-reformat=1 -progress\0".to_vec(),
                ),
                ("false", b"false\0\0\0\0".to_vec()),
                ("empty-value", b"\0".to_vec()),
                ("empty", vec![]),
                ("unterminated", vec![b'a'; 255]),
                ("full-255", {
                    let mut v = vec![b'x'; 254];
                    v.push(0);
                    v
                }),
                ("not-utf8", b"ab\xff\xfe\0".to_vec()),
                ("junk-after-nul", b"true\0\x01\x02\xff".to_vec()),
                ("utf8", "caf\u{e9}\0".as_bytes().to_vec()),
            ],
        ),
    ]
}

#[test]
#[ignore = "writes the seed corpus into the source tree; run once by hand"]
fn write_engine_seed_corpus() {
    for (name, files) in seeds() {
        let dir = corpus_dir(name);
        std::fs::create_dir_all(&dir).unwrap();
        for (label, bytes) in files {
            std::fs::write(dir.join(format!("seed-{label}")), bytes).unwrap();
        }
    }
}
