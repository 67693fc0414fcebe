//! Replays every seed of every fuzz target (crates/tss/fuzz/corpus/<target>/) through the same
//! `tss::fuzzing` function the fuzzer calls, so plain `cargo test` exercises them on stable.
//! `cargo test -p tss --test fuzz_corpus -- --ignored write_seed_corpus` regenerates the seeds
//! (synthetic only).

use std::fs;
use std::path::{Path, PathBuf};

use tss::img4::{Im4r, Img4, ManifestBody, Properties, Value};
use tss::request::{Device, Request};
use tss::response::{Answer, Ticket};
use tss::standin::{Policy, Signer};

type Target = fn(&[u8]);
const TARGETS: &[(&str, Target)] = &[
    ("response", tss::fuzzing::response),
    ("img4", tss::fuzzing::img4),
    ("im4m", tss::fuzzing::im4m),
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
    for i in (0..flipped.len()).step_by(37) {
        flipped[i] ^= 0xA5;
    }
    v.push(("flipped".into(), flipped));
    v
}

fn device(ap_nonce_len: usize, sep: bool) -> Device {
    Device {
        ecid: 0x0012_3456_789A_BCDE,
        ap_nonce: vec![0x11; ap_nonce_len],
        sep_nonce: sep.then(|| vec![0x22; 20]),
        chip_id: 0x8110,
        board_id: 0x0E,
        security_domain: 1,
        production_mode: true,
        security_mode: true,
    }
}

#[test]
#[ignore = "run by hand to regenerate the seed corpus"]
fn write_seed_corpus() {
    let signer = Signer::from_seed(b"corpus");
    let mut seeds: Vec<(&str, String, Vec<u8>)> = Vec::new();
    let ibss = ipsw::Im4p::new("ibss", "iBoot-synthetic", vec![0x5A; 600]).encode();
    for (name, alg, nonce_len, sep) in [
        ("sha384", ipsw::Algorithm::Sha384, 32, true),
        ("sha1", ipsw::Algorithm::Sha1, 20, false),
    ] {
        let mut r = Request::new(device(nonce_len, sep));
        r.add_component("iBSS", alg.digest(&ibss).as_bytes());
        r.add_component("iBEC", alg.digest(b"ibec").as_bytes());
        r.add_component("KernelCache", alg.digest(b"krnl").as_bytes());
        let answer = signer.answer(&Policy::default(), &r.to_xml());
        let body = answer.encode();
        let Answer::Ticket(t) = &answer else {
            panic!("refused")
        };
        let im4m = t.ap_img4_ticket.clone();
        let img4 = Img4::stitch(&ibss, &im4m, Some(Im4r::boot_nonce(0x3333_3333_3333_3333)))
            .unwrap()
            .encode();
        let bare = Img4::stitch(&ibss, &im4m, None).unwrap().encode();
        for (n, b) in nasty(&body) {
            seeds.push(("response", format!("{name}-{n}"), b));
        }
        for (n, b) in nasty(&img4) {
            seeds.push(("img4", format!("{name}-{n}"), b));
        }
        for (n, b) in nasty(&im4m) {
            seeds.push(("im4m", format!("{name}-{n}"), b));
        }
        seeds.push(("response", name.into(), body));
        seeds.push(("img4", name.into(), img4));
        seeds.push(("img4", format!("{name}-no-im4r"), bare));
        seeds.push(("im4m", name.into(), im4m));
    }
    for (status, message) in [
        (94u32, "This device isn't eligible for the requested build."),
        (8, "x"),
        (49, "x"),
        (69, "x"),
        (100, "x"),
        (126, "An internal error occurred."),
    ] {
        let a = Answer::Refused {
            status,
            message: message.into(),
        };
        seeds.push(("response", format!("status-{status}"), a.encode()));
    }
    seeds.push((
        "response",
        "bb-ticket".into(),
        Answer::Ticket(Ticket {
            bb_ticket: Some(vec![1, 2, 3]),
            ..Ticket::new(vec![0x30, 0])
        })
        .encode(),
    ));
    seeds.push((
        "response",
        "html".into(),
        b"<html>502 Bad Gateway</html>".to_vec(),
    ));
    seeds.push((
        "response",
        "no-plist".into(),
        b"STATUS=0&MESSAGE=SUCCESS&REQUEST_STRING=".to_vec(),
    ));
    seeds.push((
        "response",
        "huge-status".into(),
        b"STATUS=4294967296&MESSAGE=x".to_vec(),
    ));
    // DER oddities.
    let mut manp = Properties::new();
    manp.insert(*b"ECID", Value::Int(u64::MAX));
    manp.insert(*b"desc", Value::Text("text".into()));
    let odd = signer
        .sign(ManifestBody {
            manp,
            ..ManifestBody::default()
        })
        .encode();
    seeds.push(("im4m", "odd-values".into(), odd));
    seeds.push((
        "im4m",
        "huge-length".into(),
        vec![0x30, 0x84, 0x7f, 0xff, 0xff, 0xff, 0x16],
    ));
    seeds.push((
        "im4m",
        "indefinite".into(),
        vec![0x30, 0x80, 0x16, 0x04, b'I', b'M', b'4', b'M', 0, 0],
    ));
    seeds.push((
        "img4",
        "long-tag".into(),
        vec![0x30, 0x08, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F, 0x00],
    ));
    for (target, _) in TARGETS {
        let d = corpus(target);
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
    }
    for (target, name, bytes) in seeds {
        fs::write(corpus(target).join(name), bytes).unwrap();
    }
}
