//! The host side of the bench: `restation sim usbip`, the USB/IP server that presents the
//! virtual phones to the guest, and what it tells about them on its JSON-lines event log.

use std::fs;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use super::proc::{lines_of, tail, Guard, POLL};

/// One bench port: its USB/IP bus id (`1-<port>`), the profile and the mode it starts in, and
/// its role in the checks.
#[derive(Debug, Clone, Copy)]
pub struct Port {
    pub product: &'static str,
    pub mode: &'static str,
    pub role: &'static str,
}

/// The bench: a normal phone for the reference tools, a recovery and a DFU phone for
/// irecovery, a second normal phone for restation's own usbmuxd socket, a second DFU phone,
/// two more DFU phones of one model for the wire comparison (libirecovery's upload on one,
/// restation's on the other), and a DFU phone that restation restores from end to end.
/// Each normal phone is sent to recovery once, and each DFU phone resets after an upload (it
/// refuses the test file, which the TSS stand-in did not personalize, and comes back in DFU),
/// so each path gets its own phone.
pub const PORTS: [Port; 8] = [
    Port {
        product: "iPhone14,3",
        mode: "normal",
        role: "NORMAL",
    },
    Port {
        product: "iPhone10,3",
        mode: "recovery",
        role: "RECOVERY",
    },
    Port {
        product: "iPhone7,2",
        mode: "dfu",
        role: "DFU",
    },
    Port {
        product: "iPhone10,3",
        mode: "normal",
        role: "NORMAL2",
    },
    Port {
        product: "iPhone10,3",
        mode: "dfu",
        role: "DFU2",
    },
    Port {
        product: "iPhone7,2",
        mode: "dfu",
        role: "DFU3",
    },
    Port {
        product: "iPhone7,2",
        mode: "dfu",
        role: "DFU4",
    },
    Port {
        product: "iPhone10,3",
        mode: "dfu",
        role: "RESTORE",
    },
];

pub fn busid(index: usize) -> String {
    format!("1-{}", index + 1)
}

/// USB product id of each mode (what the guest's lsusb should show right after attaching).
fn pid_of(mode: &str) -> &'static str {
    match mode {
        "recovery" => "1281",
        "dfu" => "1227",
        _ => "12a8",
    }
}

/// What the server said about one phone.
#[derive(Debug, Default, Clone)]
pub struct Identity {
    pub busid: String,
    pub ecid: Option<u64>,
    pub cpid: Option<u64>,
    pub bdid: Option<u64>,
    pub udid: Option<String>,
    pub serial: Option<String>,
    pub product: Option<String>,
}

/// A running server.
pub struct Server {
    pub guard: Guard,
    pub identities: Vec<Identity>,
    pub listen: String,
}

/// A TCP port that was free a moment ago (the server binds it right after).
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free TCP port")?;
    Ok(listener.local_addr()?.port())
}

/// Starts `restation sim usbip` (with its TSS stand-in on `tss_port`) and waits for its
/// `listening` event and one identity line per phone.
pub fn start(
    restation: &Path,
    run: &Path,
    port: u16,
    tss_port: u16,
    deadline: Duration,
) -> Result<Server> {
    let events = run.join("events.jsonl");
    let log = run.join("logs/usbip-server.log");
    let listen = format!("127.0.0.1:{port}");
    let mut cmd = Command::new(restation);
    cmd.args(["sim", "usbip", "--listen", &listen]);
    cmd.arg("--tss-standin")
        .arg(format!("127.0.0.1:{tss_port}"));
    for p in PORTS {
        cmd.arg("--phone").arg(format!("{}:{}", p.product, p.mode));
    }
    cmd.arg("--events").arg(&events);
    let log_file = fs::File::create(&log)?;
    cmd.stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        .env("RUST_LOG", "info");
    let mut guard = Guard::spawn("restation sim usbip", &mut cmd)?;
    let until = Instant::now() + deadline;
    let mut listening_at = None;
    loop {
        let lines = lines_of(&events);
        let parsed: Vec<Value> = lines
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        if listening_at.is_none() && parsed.iter().any(|v| event_name(v) == Some("listening")) {
            listening_at = Some(Instant::now());
        }
        let identities = identities(&parsed);
        if listening_at.is_some() && identities.len() >= PORTS.len() {
            return Ok(Server {
                guard,
                identities,
                listen,
            });
        }
        // identity lines may come before or after `listening`; give them a moment after it
        if let Some(at) = listening_at {
            if at.elapsed() > Duration::from_secs(10) {
                bail!(
                    "the server is listening but gave {} identity lines for {} phones (events: {})",
                    identities.len(),
                    PORTS.len(),
                    events.display()
                );
            }
        }
        if let Some(status) = guard.try_wait()? {
            let text = fs::read_to_string(&log).unwrap_or_default();
            bail!(
                "`restation sim usbip` exited ({status}) before listening: {}",
                tail(&text, 6).replace('\n', " | ")
            );
        }
        if Instant::now() >= until {
            bail!(
                "`restation sim usbip` did not report `listening` within {} s (log: {})",
                deadline.as_secs(),
                log.display()
            );
        }
        thread::sleep(POLL);
    }
}

fn event_name(v: &Value) -> Option<&str> {
    v.get("event")
        .or_else(|| v.get("type"))
        .or_else(|| v.get("kind"))
        .and_then(Value::as_str)
}

/// The identity lines: objects that carry an `ecid`. Their bus id is theirs, or by order.
pub fn identities(events: &[Value]) -> Vec<Identity> {
    let mut out: Vec<Identity> = Vec::new();
    for v in events {
        if v.get("ecid").is_none() {
            continue;
        }
        let busid = v
            .get("busid")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| busid(out.len()));
        if out.iter().any(|i| i.busid == busid) {
            continue;
        }
        let text = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
        out.push(Identity {
            ecid: v.get("ecid").and_then(number),
            cpid: v.get("cpid").and_then(number),
            bdid: v.get("bdid").and_then(number),
            udid: text("udid"),
            serial: text("serial"),
            product: text("product").or_else(|| text("product_type")),
            busid,
        });
    }
    out
}

/// A number as JSON has it, or as text: `0x`-prefixed hex, 16 hex digits (how the serial
/// string spells an ECID), or decimal.
fn number(v: &Value) -> Option<u64> {
    if let Some(n) = v.as_u64() {
        return Some(n);
    }
    let s = v.as_str()?.trim();
    if let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        return u64::from_str_radix(hex, 16).ok();
    }
    if s.len() == 16 || s.chars().any(|c| c.is_ascii_alphabetic()) {
        return u64::from_str_radix(s, 16).ok();
    }
    s.parse().ok()
}

/// `bench.env`, sourced by the guest script: the USB/IP port, the phones and their identities,
/// and why something the checks need is missing.
pub fn bench_env(
    usbip_port: u16,
    identities: &[Identity],
    server_error: Option<&str>,
    restation_error: Option<&str>,
) -> String {
    let mut env = String::new();
    let mut put = |k: &str, v: &str| env.push_str(&format!("{k}={}\n", quote(v)));
    put("BENCH_USBIP_PORT", &usbip_port.to_string());
    put("BENCH_SERVER_ERROR", server_error.unwrap_or(""));
    put("BENCH_RESTATION_ERROR", restation_error.unwrap_or(""));
    let busids: Vec<String> = (0..PORTS.len()).map(busid).collect();
    put("BENCH_PHONES", &busids.join(" "));
    for (i, p) in PORTS.iter().enumerate() {
        let b = busid(i);
        put(&format!("BENCH_{}", p.role), &b);
        let var = |field: &str| format!("P_{}_{field}", b.replace('-', "_"));
        put(&var("MODE"), p.mode);
        put(&var("PID"), pid_of(p.mode));
        let id = identities.iter().find(|id| id.busid == b);
        let product = id
            .and_then(|id| id.product.clone())
            .unwrap_or_else(|| p.product.to_owned());
        put(&var("PRODUCT"), &product);
        let hex =
            |n: Option<u64>, width: usize| n.map(|n| format!("0x{n:0width$x}")).unwrap_or_default();
        put(&var("ECID"), &hex(id.and_then(|i| i.ecid), 16));
        put(&var("CPID"), &hex(id.and_then(|i| i.cpid), 4));
        put(&var("BDID"), &hex(id.and_then(|i| i.bdid), 2));
        put(
            &var("UDID"),
            &id.and_then(|i| i.udid.clone()).unwrap_or_default(),
        );
        put(
            &var("SERIAL"),
            &id.and_then(|i| i.serial.clone()).unwrap_or_default(),
        );
    }
    env
}

/// Single-quoted for sh.
pub fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_come_as_json_numbers_or_hex_or_decimal_text() {
        assert_eq!(number(&Value::from(42u64)), Some(42));
        assert_eq!(number(&Value::from("0x8110")), Some(0x8110));
        assert_eq!(
            number(&Value::from("0002213824536326")),
            Some(0x0002_2138_2453_6326)
        );
        assert_eq!(number(&Value::from("1234")), Some(1234));
        assert_eq!(number(&Value::from("zz")), None);
    }

    #[test]
    fn identity_lines_are_the_objects_with_an_ecid() {
        let events: Vec<Value> = [
            r#"{"event":"listening","addr":"127.0.0.1:3240"}"#,
            r#"{"event":"identity","busid":"1-2","ecid":"0x1234","cpid":"0x8015","bdid":14,"udid":"u","serial":"s","product":"iPhone10,3"}"#,
            r#"{"event":"identity","busid":"1-2","ecid":"0x1234"}"#,
        ]
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
        let ids = identities(&events);
        assert_eq!(ids.len(), 1);
        assert_eq!(ids[0].busid, "1-2");
        assert_eq!(ids[0].ecid, Some(0x1234));
        assert_eq!(ids[0].bdid, Some(14));
        assert_eq!(ids[0].product.as_deref(), Some("iPhone10,3"));
        let env = bench_env(3240, &ids, None, Some("it's broken"));
        assert!(env.contains("P_1_2_ECID='0x0000000000001234'\n"));
        assert!(env.contains("P_1_2_CPID='0x8015'\n"));
        assert!(env.contains("P_1_2_BDID='0x0e'\n"));
        assert!(env.contains("BENCH_RESTATION_ERROR='it'\\''s broken'\n"));
        assert!(env.contains("BENCH_DFU='1-3'\n"));
    }
}
