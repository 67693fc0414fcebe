//! Personalization costs against their peers, measured in one run:
//! - the phone's check (`TicketCheck::check_img4`: DER decode, ECDSA P-256 verify, SHA-384 of
//!   the IM4P) against a bare SHA-384 of the same IM4P bytes (the floor: a phone must hash);
//! - stitching (`Img4::stitch` + `encode`) against a plain copy of the same bytes;
//! - the stand-in's signing of a full request (parse request plist, build and sign the
//!   ticket, encode the answer) plus the client's parse of the answer, against a plist
//!   round trip of the same request alone.
//!
//! ```text
//! cargo bench -p tss --bench personalize
//! ```
//! `BENCH_RUNS` sets the repetitions (best of, default 20).

use std::hint::black_box;
use std::time::{Duration, Instant};

use tss::img4::{Im4r, Img4};
use tss::request::{Device, Request};
use tss::response;
use tss::standin::{Policy, Signer};
use tss::verify::{DeviceState, TicketCheck};

fn best<T>(runs: usize, mut f: impl FnMut() -> T) -> Duration {
    let mut best = Duration::MAX;
    for _ in 0..runs.max(1) {
        let t = Instant::now();
        black_box(f());
        best = best.min(t.elapsed());
    }
    best
}

fn mibs(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / f64::from(1u32 << 20) / d.as_secs_f64()
}

fn main() {
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(20);
    let device = Device {
        ecid: 0x0012_3456_789A_BCDE,
        ap_nonce: vec![0x11; 32],
        sep_nonce: Some(vec![0x22; 20]),
        chip_id: 0x8110,
        board_id: 0x0E,
        security_domain: 1,
        production_mode: true,
        security_mode: true,
    };
    let signer = Signer::from_seed(b"bench");
    let check = TicketCheck::new(signer.public_key());
    let state = DeviceState {
        ecid: device.ecid,
        ap_nonce: &device.ap_nonce,
        chip_board: Some((device.chip_id, device.board_id)),
    };
    println!("best of {runs}");
    for (name, tag, size) in [
        ("iBSS", *b"ibss", 48usize << 10),
        ("RestoreKernelCache", *b"rkrn", 16 << 20),
    ] {
        let im4p =
            ipsw::Im4p::new(&String::from_utf8_lossy(&tag), "bench", vec![0xA5; size]).encode();
        let mut request = Request::new(device.clone());
        request.add_component(name, ipsw::Algorithm::Sha384.digest(&im4p).as_bytes());
        let body = signer
            .answer(&Policy::default(), &request.to_xml())
            .encode();
        let ticket = response::parse(&body).expect("ticket");
        let img4 = Img4::stitch(
            &im4p,
            &ticket.ap_img4_ticket,
            Some(Im4r::boot_nonce(0x1111_1111_1111_1111)),
        )
        .expect("stitch")
        .encode();
        check
            .check_img4(&img4, &state, Some(tag))
            .expect("accepted");

        let t_sha = best(runs, || ipsw::Algorithm::Sha384.digest(&im4p));
        let t_check = best(runs, || check.check_img4(&img4, &state, Some(tag)));
        let t_copy = best(runs, || img4.clone());
        let t_stitch = best(runs, || {
            Img4::stitch(&im4p, &ticket.ap_img4_ticket, None).map(|i| i.encode())
        });
        println!(
            "{name:<19} {:>9} B  check {:>8.1} MiB/s  sha384 {:>8.1} MiB/s  ratio check/sha384 {:.3}",
            img4.len(),
            mibs(img4.len(), t_check),
            mibs(im4p.len(), t_sha),
            t_check.as_secs_f64() / t_sha.as_secs_f64()
        );
        println!(
            "{name:<19} {:>9} B  stitch {:>7.1} MiB/s  memcpy {:>8.1} MiB/s  ratio stitch/memcpy {:.2}",
            img4.len(),
            mibs(img4.len(), t_stitch),
            mibs(img4.len(), t_copy),
            t_stitch.as_secs_f64() / t_copy.as_secs_f64()
        );
    }

    // A full iPhone14,3-shaped request: ~50 components.
    let mut request = Request::new(device.clone());
    for i in 0..50u8 {
        let name = [
            "iBSS",
            "iBEC",
            "LLB",
            "iBoot",
            "DeviceTree",
            "KernelCache",
            "RestoreRamDisk",
            "SEP",
        ]
        .get(usize::from(i) % 8)
        .copied()
        .unwrap_or("iBSS");
        request.add_component(&format!("{name}{i}"), &[i; 48]);
    }
    for name in [
        "iBSS",
        "iBEC",
        "KernelCache",
        "RestoreKernelCache",
        "RestoreRamDisk",
    ] {
        request.add_component(name, &[7; 48]);
    }
    let xml = request.to_xml();
    let t_sign = best(runs, || {
        let body = signer.answer(&Policy::default(), &xml).encode();
        response::parse(&body).map(|t| t.ap_img4_ticket.len())
    });
    let t_plist = best(runs, || {
        Request::from_xml(
            &Request::from_xml(&xml)
                .map(|r| r.to_xml())
                .unwrap_or_default(),
        )
        .is_ok()
    });
    println!(
        "ticket for {} components: sign+answer+parse {:>7.1} µs ({:.0}/s)  request plist round trip {:>7.1} µs  ratio {:.2}",
        request.components.len(),
        t_sign.as_secs_f64() * 1e6,
        1.0 / t_sign.as_secs_f64(),
        t_plist.as_secs_f64() * 1e6,
        t_sign.as_secs_f64() / t_plist.as_secs_f64()
    );
}
