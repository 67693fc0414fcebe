//! Frame encode + decode of lockdown replies, against a plain plist write + read of the same
//! value (no framing, no typing) measured in the same run.
//!
//! `cargo bench -p lockdown --bench frame` prints criterion's throughput per case, then one
//! line per case with both throughputs and the ratio lockdown / plain plist.

use std::hint::black_box;
use std::io::Cursor;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use lockdown::{keys, DeviceCodec, Format, HostCodec, Reply};
use plist::{Dictionary, Value};

struct Case {
    name: &'static str,
    reply: Reply,
    format: Format,
}

fn cases() -> Vec<Case> {
    let typical = Reply::GetValue {
        domain: None,
        key: Some(keys::PRODUCT_VERSION.into()),
        value: Some("15.4.1".into()),
    };
    let mut domain = Dictionary::new();
    for (i, key) in keys::IDENTITY.iter().enumerate() {
        domain.insert((*key).into(), format!("value-{i}").into());
    }
    let whole_domain = Reply::GetValue {
        domain: None,
        key: None,
        value: Some(Value::Dictionary(domain)),
    };
    let mib = Reply::GetValue {
        domain: Some("com.apple.mobile.restation".into()),
        key: Some("Blob".into()),
        value: Some(Value::Data(
            (0..1 << 20).map(|i| (i * 31 % 251) as u8).collect(),
        )),
    };
    let mut out = Vec::new();
    for format in [Format::Xml, Format::Binary] {
        let tag = if format == Format::Xml {
            "xml"
        } else {
            "binary"
        };
        out.push(Case {
            name: leak(format!("get_value_product_version_{tag}")),
            reply: typical.clone(),
            format,
        });
        out.push(Case {
            name: leak(format!("get_value_identity_domain_{tag}")),
            reply: whole_domain.clone(),
            format,
        });
        out.push(Case {
            name: leak(format!("get_value_1mib_data_{tag}")),
            reply: mib.clone(),
            format,
        });
    }
    out
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

/// The crate: device encodes a typed reply into a frame, host decodes the frame into a reply.
fn lockdown_round(device: &DeviceCodec, host: &mut HostCodec, reply: &Reply, wire: &mut Vec<u8>) {
    wire.clear();
    device.encode_reply(reply, wire).unwrap();
    host.receive(wire);
    black_box(host.poll_reply().unwrap().unwrap());
}

/// The peer: the same dictionary written and read by the plist crate, no framing, no typing.
fn plain_round(value: &Value, format: Format, wire: &mut Vec<u8>) {
    wire.clear();
    match format {
        Format::Xml => value.to_writer_xml(&mut *wire).unwrap(),
        Format::Binary => value.to_writer_binary(&mut *wire).unwrap(),
    }
    black_box(Value::from_reader(Cursor::new(&wire[..])).unwrap());
}

fn frame_len(case: &Case) -> u64 {
    let mut wire = Vec::new();
    DeviceCodec::new()
        .with_format(case.format)
        .encode_reply(&case.reply, &mut wire)
        .unwrap();
    wire.len() as u64
}

fn per_iter(mut f: impl FnMut(), budget: Duration) -> Duration {
    let start = Instant::now();
    let mut n = 0u32;
    while start.elapsed() < budget || n < 3 {
        f();
        n += 1;
    }
    start.elapsed() / n
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    let cases = cases();
    for case in &cases {
        let mut group = criterion.benchmark_group(case.name);
        group.throughput(Throughput::Bytes(frame_len(case)));
        if frame_len(case) > 100_000 {
            group.sample_size(20);
        }
        let device = DeviceCodec::new().with_format(case.format);
        let mut host = HostCodec::new();
        let mut wire = Vec::new();
        group.bench_function("lockdown_frame", |b| {
            b.iter(|| lockdown_round(&device, &mut host, &case.reply, &mut wire))
        });
        let value = Value::Dictionary(case.reply.to_dictionary());
        group.bench_function("plain_plist", |b| {
            b.iter(|| plain_round(&value, case.format, &mut wire))
        });
        group.finish();
    }
    criterion.final_summary();

    println!("\nratio (same run, lockdown frame encode+decode vs plain plist write+read):");
    for case in &cases {
        let bytes = frame_len(case) as f64;
        let device = DeviceCodec::new().with_format(case.format);
        let mut host = HostCodec::new();
        let mut wire = Vec::new();
        let value = Value::Dictionary(case.reply.to_dictionary());
        let budget = Duration::from_millis(300);
        let ours = per_iter(
            || lockdown_round(&device, &mut host, &case.reply, &mut wire),
            budget,
        );
        let peer = per_iter(|| plain_round(&value, case.format, &mut wire), budget);
        let mibs = |d: Duration| bytes / d.as_secs_f64() / (1 << 20) as f64;
        println!(
            "  {:<36} {:>8} B  lockdown {:>9.1} MiB/s  plain plist {:>9.1} MiB/s  ratio lockdown/plain {:.2}",
            case.name,
            bytes as u64,
            mibs(ours),
            mibs(peer),
            peer.as_secs_f64() / ours.as_secs_f64(),
        );
    }
}
