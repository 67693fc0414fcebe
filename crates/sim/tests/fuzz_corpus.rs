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

#[test]
fn usbip_wire_corpus() {
    replay("usbip_wire", sim::fuzzing::usbip_wire, 10);
}

/// Writes the seed corpus of `usbip_wire`: every USB/IP message of a real attach (device list,
/// import, the kernel's enumeration, a bulk upload, a pending read and its unlink, the
/// replies), plus nasty ones (wrong version, unknown codes, huge lengths, unterminated
/// strings, truncations). Run once with
/// `cargo test -p sim --test fuzz_corpus -- --ignored write_usbip_seed_corpus`.
#[test]
#[ignore]
fn write_usbip_seed_corpus() {
    use sim::usbip::wire::{
        CmdSubmit, CmdUnlink, Command, ExportedDevice, OpReply, OpRequest, RetSubmit, RetUnlink,
        Return, UsbDevice, UsbInterface,
    };
    use usb::Direction;

    let device = UsbDevice {
        path: "/sys/devices/platform/restation-sim/usb1/1-1".into(),
        busid: "1-1".into(),
        busnum: 1,
        devnum: 2,
        speed: 3,
        id_vendor: 0x05AC,
        id_product: 0x1281,
        bcd_device: 0,
        device_class: 0,
        device_subclass: 0,
        device_protocol: 0,
        configuration_value: 1,
        num_configurations: 1,
        num_interfaces: 2,
    };
    let interfaces = vec![
        UsbInterface {
            class: 0xFE,
            subclass: 1,
            protocol: 2,
        },
        UsbInterface {
            class: 0xFF,
            subclass: 0xFF,
            protocol: 0x51,
        },
    ];
    let submit = |seqnum: u32, direction, ep, setup: [u8; 8], length: u32, data: Vec<u8>| {
        Command::Submit(CmdSubmit {
            seqnum,
            devid: 0x10002,
            direction,
            ep,
            transfer_flags: if direction == Direction::In { 0x200 } else { 0 },
            transfer_buffer_length: length,
            start_frame: 0,
            number_of_packets: 0,
            interval: 0,
            setup,
            data,
            iso: vec![],
        })
    };
    let ret = |seqnum: u32, status: i32, data: Vec<u8>, actual: u32| {
        Return::Submit(RetSubmit {
            seqnum,
            status,
            actual_length: actual,
            start_frame: 0,
            number_of_packets: 0,
            error_count: 0,
            data,
            iso: vec![],
        })
    };
    let enc = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut out = Vec::new();
        f(&mut out);
        out
    };
    let op_requests = [
        enc(&|o| OpRequest::DevList.encode(o).unwrap()),
        enc(&|o| {
            OpRequest::Import {
                busid: "1-1".into(),
            }
            .encode(o)
            .unwrap()
        }),
    ];
    let op_replies = [
        enc(&|o| {
            OpReply::DevList {
                devices: vec![ExportedDevice {
                    device: device.clone(),
                    interfaces: interfaces.clone(),
                }],
            }
            .encode(o)
            .unwrap()
        }),
        enc(&|o| OpReply::DevList { devices: vec![] }.encode(o).unwrap()),
        enc(&|o| OpReply::Imported(device.clone()).encode(o).unwrap()),
        enc(&|o| OpReply::ImportRefused { status: 1 }.encode(o).unwrap()),
    ];
    // Odd sequence numbers are IN for the fuzz body's URB-reply stream.
    let get_device = submit(
        1,
        Direction::In,
        0,
        [0x80, 6, 0, 1, 0, 0, 64, 0],
        64,
        vec![],
    );
    let set_config = submit(2, Direction::Out, 0, [0, 9, 1, 0, 0, 0, 0, 0], 0, vec![]);
    let command = submit(
        4,
        Direction::Out,
        0,
        [0x40, 0, 0, 0, 0, 0, 21, 0],
        21,
        b"getenv build-version\0".to_vec(),
    );
    let upload = submit(6, Direction::Out, 4, [0; 8], 700, vec![0xA5; 700]);
    let read = submit(7, Direction::In, 5, [0; 8], 16384, vec![]);
    let unlink = Command::Unlink(CmdUnlink {
        seqnum: 8,
        devid: 0x10002,
        unlink_seqnum: 7,
    });
    let commands: Vec<Vec<u8>> = [&get_device, &set_config, &command, &upload, &read, &unlink]
        .iter()
        .map(|c| enc(&|o| c.encode(o).unwrap()))
        .collect();
    let replies: Vec<Vec<u8>> = [
        ret(1, 0, vec![18, 1, 0, 2, 0, 0, 0, 64], 8),
        ret(2, 0, vec![], 0),
        ret(3, -32, vec![], 0),
        ret(7, 0, vec![0, 0, 0, 0, 0, 0, 0, 1], 8),
        Return::Unlink(RetUnlink {
            seqnum: 8,
            status: -104,
        }),
    ]
    .iter()
    .map(|r| enc(&|o| r.encode(o).unwrap()))
    .collect();

    let with = |selector: u8, body: &[u8]| {
        let mut v = vec![selector];
        v.extend_from_slice(body);
        v
    };
    let mut seeds: Vec<Vec<u8>> = Vec::new();
    for b in &op_requests {
        seeds.push(with(0, b));
    }
    for b in &op_replies {
        seeds.push(with(1, b));
    }
    for b in &commands {
        seeds.push(with(2, b));
    }
    seeds.push(with(2, &commands.concat()));
    for b in &replies {
        seeds.push(with(3, b));
    }
    seeds.push(with(3, &replies.concat()));
    // Nasty ones.
    seeds.push(with(0, b"GET / HTTP/1.1\r\n\r\n"));
    seeds.push(with(0, &[0x01, 0x11, 0x12, 0x34, 0, 0, 0, 0]));
    let mut unterminated = op_requests[1].clone();
    unterminated[8..40].fill(b'x');
    seeds.push(with(0, &unterminated));
    let mut many = op_replies[1].clone();
    many[8..12].copy_from_slice(&u32::MAX.to_be_bytes());
    seeds.push(with(1, &many));
    let mut huge = commands[3].clone();
    huge[24..28].copy_from_slice(&u32::MAX.to_be_bytes());
    seeds.push(with(2, &huge));
    let mut bad_dir = commands[0].clone();
    bad_dir[12..16].copy_from_slice(&9u32.to_be_bytes());
    seeds.push(with(2, &bad_dir));
    let mut bad_ep = commands[0].clone();
    bad_ep[16..20].copy_from_slice(&16u32.to_be_bytes());
    seeds.push(with(2, &bad_ep));
    let mut iso = commands[4].clone();
    iso[32..36].copy_from_slice(&5000u32.to_be_bytes());
    seeds.push(with(2, &iso));
    seeds.push(with(2, &commands[3][..60]));
    seeds.push(with(3, &[0xFF; 48]));
    seeds.push(with(3, &replies[0][..20]));
    seeds.push(Vec::new());
    let dir = corpus("usbip_wire");
    std::fs::create_dir_all(&dir).unwrap();
    for (i, seed) in seeds.iter().enumerate() {
        std::fs::write(dir.join(format!("seed-{i:02}")), seed).unwrap();
    }
}
