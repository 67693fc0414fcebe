//! Replays the committed fuzz corpora through the fuzz targets' bodies, so the normal test run
//! exercises them on stable. `write_seed_corpus` (ignored) regenerates the seeds.

use std::path::{Path, PathBuf};

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target)
}

#[test]
fn every_corpus_replays() {
    for (name, target) in usb::fuzzing::TARGETS {
        let dir = corpus_dir(name);
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            target(&std::fs::read(&path).unwrap());
            n += 1;
        }
        assert!(n >= 5, "only {n} seeds in {}", dir.display());
    }
}

/// Descriptor layouts written from the text of PROTOCOLS.md §12 (no bytes from fixtures).
fn seeds() -> Vec<(&'static str, Vec<Vec<u8>>)> {
    let device = usb::DeviceDescriptor {
        usb_version: 0x0200,
        class: 0,
        subclass: 0,
        protocol: 0,
        max_packet_size_0: 64,
        vendor_id: 0x05ac,
        product_id: 0x1281,
        device_version: 0,
        manufacturer_index: 2,
        product_index: 3,
        serial_number_index: 4,
        num_configurations: 1,
    }
    .to_bytes()
    .to_vec();
    let mut device_bad_len = device.clone();
    device_bad_len[0] = 9;
    let mut device_wrong_type = device.clone();
    device_wrong_type[1] = 2;

    let dfu = vec![
        9, 2, 25, 0, 1, 1, 0, 0x80, 250, 9, 4, 0, 0, 0, 0xFE, 1, 0, 0, 7, 0x21, 1, 10, 0, 0, 8,
    ];
    let mut recovery = vec![9, 2, 0, 0, 2, 1, 5, 0x80, 250];
    recovery.extend_from_slice(&[9, 4, 0, 0, 1, 0xFE, 1, 2, 0, 7, 5, 0x04, 2, 0, 2, 0]);
    recovery.extend_from_slice(&[9, 4, 1, 0, 0, 0xFF, 0xFF, 0x51, 0]);
    recovery.extend_from_slice(&[9, 4, 1, 1, 2, 0xFF, 0xFF, 0x51, 6]);
    recovery.extend_from_slice(&[7, 5, 0x81, 2, 0, 2, 0, 7, 5, 0x02, 2, 0, 2, 0]);
    let total = recovery.len() as u16;
    recovery[2..4].copy_from_slice(&total.to_le_bytes());
    let mut huge_total = dfu.clone();
    huge_total[2..4].copy_from_slice(&0xffffu16.to_le_bytes());
    let mut zero_len_inner = dfu.clone();
    zero_len_inner[18] = 0;
    let endpoint_first = vec![9, 2, 16, 0, 1, 1, 0, 0x80, 50, 7, 5, 0x81, 2, 0, 2, 0];

    let serial = usb::string::encode(
        "CPID:8020 CPRV:11 CPFM:03 SCEP:01 BDID:0C ECID:001A2B3C4D5E6F70 IBFL:3C SRTG:[iBoot-1704.10]",
    )
    .unwrap();
    let mut truncated_serial = serial.clone();
    truncated_serial.truncate(20);

    vec![
        (
            "device_descriptor",
            vec![
                device.clone(),
                device[..10].to_vec(),
                device_bad_len,
                device_wrong_type,
                vec![],
            ],
        ),
        (
            "configuration_descriptor",
            vec![
                dfu.clone(),
                recovery,
                huge_total,
                zero_len_inner,
                endpoint_first,
                dfu[..12].to_vec(),
                vec![9, 2, 5, 0],
            ],
        ),
        (
            "string_descriptor",
            vec![
                serial,
                truncated_serial,
                usb::string::encode("Apple Mobile Device (Recovery Mode)").unwrap(),
                vec![5, 3, 0x41, 0, 0],
                vec![4, 3, 0x00, 0xd8],
                vec![2, 3],
                vec![255, 3, 0x41],
            ],
        ),
        (
            "language_ids",
            vec![
                vec![4, 3, 9, 4],
                vec![6, 3, 9, 4, 7, 4],
                vec![3, 3, 9],
                vec![4, 1, 9, 4],
                vec![0, 3],
            ],
        ),
        (
            "port_path",
            [
                "1-2.3",
                "1-1.3.2.2",
                "usb1",
                "1-0",
                "1-2:1.0",
                "300-1",
                "1-1.1.1.1.1.1.1.1",
                "",
            ]
            .iter()
            .map(|s| s.as_bytes().to_vec())
            .collect(),
        ),
        (
            "setup_packet",
            vec![
                vec![0xA1, 3, 0, 0, 0, 0, 6, 0],
                vec![0x21, 1, 7, 0, 0, 0, 0, 8],
                vec![0x40, 0, 0, 0, 0, 0, 8, 0],
                vec![0xC0, 0, 0, 0, 0, 0, 255, 0],
                vec![0x80, 6, 4, 3, 9, 4, 255, 0],
                vec![0xff; 7],
            ],
        ),
    ]
}

#[test]
#[ignore = "writes the seed corpus into the source tree; run once by hand"]
fn write_seed_corpus() {
    for (name, files) in seeds() {
        let dir = corpus_dir(name);
        std::fs::create_dir_all(&dir).unwrap();
        for (i, bytes) in files.iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{i}")), bytes).unwrap();
        }
    }
}
