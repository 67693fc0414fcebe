//! `restation serve --http ADDR` as a child process: the TCP listener's access rule (another
//! address than loopback needs a token, refused at startup without one, 401 without it on a
//! request; loopback is open to loopback hosts only), and `GET /metrics` after a real restore
//! on the virtual bench, parsed back line by line as the Prometheus text format 0.0.4.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

mod common;
use common::{poll_until, restation, temp_dir, Daemon};

const DEADLINE: Duration = Duration::from_secs(120);
const TOKEN: &str = "bench-token-0123456789abcdef";

/// A TCP port free a moment ago.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn serve(args: &[&str]) -> Daemon {
    let child = Command::new(env!("CARGO_BIN_EXE_restation"))
        .arg("serve")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start restation serve");
    Daemon(child)
}

/// One HTTP/1.1 request over TCP: status and body (`None` while nothing listens).
fn request(port: u16, method: &str, path: &str, headers: &[&str]) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers
        .iter()
        .any(|h| h.to_ascii_lowercase().starts_with("host:"))
    {
        head.push_str(&format!("Host: 127.0.0.1:{port}\r\n"));
    }
    for h in headers {
        head.push_str(h);
        head.push_str("\r\n");
    }
    head.push_str("Content-Length: 0\r\n\r\n");
    stream.write_all(head.as_bytes()).ok()?;
    let mut answer = Vec::new();
    if path.contains("events") {
        // A stream never ends: its head is enough.
        let mut buf = [0u8; 1024];
        let n = stream.read(&mut buf).ok()?;
        answer.extend_from_slice(&buf[..n]);
    } else {
        stream.read_to_end(&mut answer).ok()?;
    }
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((status, body))
}

fn get(port: u16, path: &str, headers: &[&str]) -> Option<(u16, String)> {
    request(port, "GET", path, headers)
}

#[test]
fn a_listener_off_loopback_needs_a_token_and_loopback_is_open_to_loopback_hosts_only() {
    let dir = temp_dir("http-token");
    let socket = dir.join("restation.sock");
    let socket = socket.to_str().unwrap();

    // Refused at startup: nothing to check a request against.
    let port = free_port();
    let addr = format!("0.0.0.0:{port}");
    let mut refused = serve(&["--sim", "1", "--socket", socket, "--http", &addr]);
    let status = poll_until(DEADLINE, "the daemon to refuse to start", || {
        refused.0.try_wait().unwrap()
    });
    assert!(!status.success());
    let out = restation(&["serve", "--sim", "1", "--socket", socket, "--http", &addr]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("token"), "{err}");
    assert!(get(port, "/devices", &[]).is_none(), "nothing listens");

    // With a token: every request must carry it, but the page's static code.
    let _daemon = serve(&[
        "--sim",
        "1",
        "--socket",
        socket,
        "--http",
        &addr,
        "--http-token",
        TOKEN,
    ]);
    let bearer = format!("Authorization: Bearer {TOKEN}");
    poll_until(DEADLINE, "the TCP listener", || get(port, "/devices", &[]));
    for path in ["/devices", "/", "/metrics", "/jobs", "/events"] {
        let (status, body) = get(port, path, &[]).unwrap();
        assert_eq!(status, 401, "{path} without the token: {body}");
        let (status, _) = get(
            port,
            path,
            &["Authorization: Bearer wrong-token-0123456789"],
        )
        .unwrap();
        assert_eq!(status, 401, "{path} with a wrong token");
        let (status, body) = get(port, path, &[&bearer]).unwrap();
        assert_eq!(status, 200, "{path} with the bearer token: {body}");
        let (status, _) = get(port, &format!("{path}?token={TOKEN}"), &[]).unwrap();
        assert_eq!(status, 200, "{path} with ?token=");
    }
    let (status, _) = request(
        port,
        "POST",
        "/devices/0x1/identify",
        &["Content-Type: application/json"],
    )
    .unwrap();
    assert_eq!(status, 401, "POST without the token");
    for path in ["/app.js", "/style.css"] {
        assert_eq!(get(port, path, &[]).unwrap().0, 200, "{path} is public");
    }
    drop(_daemon);

    // Loopback: no token, but only for loopback host names and same-origin POSTs.
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let _daemon = serve(&["--sim", "1", "--socket", socket, "--http", &addr]);
    let (status, body) = poll_until(DEADLINE, "the loopback listener", || {
        get(port, "/devices", &[])
    });
    assert_eq!(status, 200, "{body}");
    let (status, page) = get(port, "/", &["Host: localhost"]).unwrap();
    assert_eq!(status, 200);
    assert!(page.contains("<script src=\"app.js\">"), "{page}");
    let (status, _) = get(port, "/devices", &["Host: attacker.example"]).unwrap();
    assert_eq!(status, 403, "a rebound DNS name is refused");
    let (status, _) = request(
        port,
        "POST",
        "/devices/0x1/identify",
        &[
            "Content-Type: application/json",
            "Origin: http://attacker.example",
        ],
    )
    .unwrap();
    assert_eq!(status, 403, "a POST from another origin is refused");
    let _ = std::fs::remove_dir_all(&dir);
}

/// One parsed sample line.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

fn metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn label_name(s: &str) -> bool {
    metric_name(s) && !s.contains(':')
}

fn value(s: &str) -> Option<f64> {
    match s {
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => s.parse().ok(),
    }
}

/// Parses one sample line strictly (labels with escapes, a value, no timestamp).
fn sample(line: &str) -> Result<Sample, String> {
    let bad = |why: &str| format!("{why}: {line:?}");
    let name_end = line.find(['{', ' ']).ok_or_else(|| bad("no value"))?;
    let name = &line[..name_end];
    if !metric_name(name) {
        return Err(bad("bad metric name"));
    }
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(after) = rest.strip_prefix('{') {
        let mut chars = after.char_indices().peekable();
        let end = loop {
            // name=
            let start = chars
                .peek()
                .map(|(i, _)| *i)
                .ok_or_else(|| bad("open labels"))?;
            if after[start..].starts_with('}') {
                break start + 1;
            }
            let eq = after[start..]
                .find('=')
                .ok_or_else(|| bad("label without ="))?
                + start;
            let label = &after[start..eq];
            if !label_name(label) {
                return Err(bad("bad label name"));
            }
            while chars.peek().is_some_and(|(i, _)| *i <= eq) {
                chars.next();
            }
            if chars.next().map(|(_, c)| c) != Some('"') {
                return Err(bad("label value not quoted"));
            }
            let mut v = String::new();
            loop {
                match chars
                    .next()
                    .ok_or_else(|| bad("unterminated label value"))?
                {
                    (_, '\\') => match chars.next().map(|(_, c)| c) {
                        Some('\\') => v.push('\\'),
                        Some('"') => v.push('"'),
                        Some('n') => v.push('\n'),
                        _ => return Err(bad("bad escape")),
                    },
                    (_, '"') => break,
                    (_, '\n') => return Err(bad("newline in a label value")),
                    (_, c) => v.push(c),
                }
            }
            if labels.insert(label.to_string(), v).is_some() {
                return Err(bad("repeated label"));
            }
            match chars.next() {
                Some((_, ',')) => {}
                Some((i, '}')) => break i + 1,
                _ => return Err(bad("labels not separated by ,")),
            }
        };
        rest = &after[end..];
    }
    let value_text = rest
        .strip_prefix(' ')
        .ok_or_else(|| bad("no space before the value"))?;
    if value_text.contains(' ') {
        return Err(bad("more than a value (timestamps are not written)"));
    }
    let value = value(value_text).ok_or_else(|| bad("bad value"))?;
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// Parses a whole exposition: every line a HELP, a TYPE or a sample of a declared family.
fn exposition(text: &str) -> Vec<Sample> {
    assert!(text.ends_with('\n'), "the exposition ends with a newline");
    let mut types: HashMap<String, String> = HashMap::new();
    let mut samples = Vec::new();
    for line in text.lines() {
        if let Some(comment) = line.strip_prefix("# ") {
            let mut parts = comment.splitn(3, ' ');
            let (kind, name, rest) = (parts.next(), parts.next(), parts.next());
            let name = name.unwrap_or_else(|| panic!("bare comment {line:?}"));
            assert!(metric_name(name), "{line:?}");
            match kind {
                Some("HELP") => assert!(rest.is_some_and(|r| !r.is_empty()), "{line:?}"),
                Some("TYPE") => {
                    let t = rest.unwrap_or_default();
                    assert!(
                        ["counter", "gauge", "histogram", "summary", "untyped"].contains(&t),
                        "{line:?}"
                    );
                    assert!(
                        types.insert(name.to_string(), t.to_string()).is_none(),
                        "TYPE given twice: {line:?}"
                    );
                }
                _ => panic!("unknown comment {line:?}"),
            }
            continue;
        }
        assert!(!line.is_empty() && !line.starts_with('#'), "{line:?}");
        let s = sample(line).unwrap_or_else(|e| panic!("{e}"));
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                let base = s.name.strip_suffix(suffix)?;
                (types.get(base).map(String::as_str) == Some("histogram")).then_some(base)
            })
            .unwrap_or(&s.name);
        let kind = types
            .get(family)
            .unwrap_or_else(|| panic!("no TYPE before {line:?}"));
        if kind == "counter" {
            assert!(
                s.name.ends_with("_total"),
                "counter names end in _total: {line:?}"
            );
        }
        if kind == "histogram" && s.name.ends_with("_bucket") {
            assert!(s.labels.contains_key("le"), "{line:?}");
        }
        samples.push(s);
    }
    samples
}

fn find<'a>(samples: &'a [Sample], name: &str, labels: &[(&str, &str)]) -> Option<&'a Sample> {
    samples.iter().find(|s| {
        s.name == name
            && labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
    })
}

fn staged_id(store: &Path, dir: &Path) -> String {
    let ipsw = dir.join("iPhone14_3.ipsw");
    let out = restation(&[
        "ipsw",
        "synth",
        "--profile",
        "iPhone14,3",
        "--os-size",
        "2M",
        ipsw.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = restation(&[
        "ipsw",
        "stage",
        ipsw.to_str().unwrap(),
        "--store",
        store.to_str().unwrap(),
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let record: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    record["id"].as_str().unwrap().to_string()
}

#[test]
fn metrics_after_a_restore_parse_as_the_text_exposition_format() {
    let dir = temp_dir("http-metrics");
    let store = dir.join("store");
    let socket = dir.join("restation.sock");
    let id = staged_id(&store, &dir);
    let port = free_port();
    let _daemon = serve(&[
        "--sim-profile",
        "iPhone14,3:dfu",
        "--sim-profile",
        "iPhone10,3:recovery",
        "--sim-speed",
        "50",
        "--store",
        store.to_str().unwrap(),
        "--socket",
        socket.to_str().unwrap(),
        "--http",
        &format!("127.0.0.1:{port}"),
    ]);
    let scrape = || {
        let (status, body) = get(port, "/metrics", &[])?;
        assert_eq!(status, 200, "{body}");
        Some(exposition(&body))
    };
    poll_until(DEADLINE, "both phones identified", || {
        let m = scrape()?;
        let n = |mode| find(&m, "restation_phones", &[("mode", mode)]).map(|s| s.value);
        (n("dfu") == Some(1.0) && n("recovery") == Some(1.0)).then_some(())
    });

    let out = restation(&[
        "restore",
        "--port",
        "1-1.1",
        "--ipsw",
        &id,
        "--json",
        "--socket",
        socket.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let m = poll_until(
        DEADLINE,
        "the restore counted and the phone back in iOS",
        || {
            let m = scrape()?;
            let back = find(&m, "restation_phones", &[("mode", "normal")]).map(|s| s.value);
            (back == Some(1.0)).then_some(m)
        },
    );
    let restored = find(
        &m,
        "restation_restores_total",
        &[("result", "succeeded"), ("number", "none")],
    )
    .expect("restation_restores_total{result=\"succeeded\"}");
    assert_eq!(restored.value, 1.0);
    assert!(find(&m, "restation_restores_total", &[("result", "failed")]).is_none());
    assert_eq!(
        find(&m, "restation_restores_running", &[]).unwrap().value,
        0.0
    );
    // At least the OS image went over ASR (the synthetic IPSW's is 256 KiB or more).
    let bytes = find(&m, "restation_transferred_bytes_total", &[])
        .unwrap()
        .value;
    assert!(bytes >= 256.0 * 1024.0, "{bytes} bytes counted");
    for name in [
        "restation_devices_ignored_total",
        "restation_identify_failed_total",
        "restation_api_refused_total",
        "restation_usbmuxd_malformed_total",
        "restation_mux_sessions",
        "restation_identifying",
    ] {
        assert!(find(&m, name, &[]).is_some(), "{name}");
    }
    // Every phase of the restore was timed, and each histogram adds up.
    let phases: Vec<&str> = m
        .iter()
        .filter(|s| s.name == "restation_phase_duration_seconds_count")
        .map(|s| s.labels["phase"].as_str())
        .collect();
    assert!(phases.contains(&"restore"), "{phases:?}");
    for phase in &phases {
        let buckets: Vec<&Sample> = m
            .iter()
            .filter(|s| {
                s.name == "restation_phase_duration_seconds_bucket" && s.labels["phase"] == *phase
            })
            .collect();
        assert!(
            buckets.windows(2).all(|w| w[0].value <= w[1].value),
            "{phase}"
        );
        let last = buckets.last().unwrap();
        assert_eq!(last.labels["le"], "+Inf");
        let count = find(
            &m,
            "restation_phase_duration_seconds_count",
            &[("phase", phase)],
        );
        assert_eq!(Some(last.value), count.map(|c| c.value), "{phase}");
        assert!(find(
            &m,
            "restation_phase_duration_seconds_sum",
            &[("phase", phase)]
        )
        .is_some());
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_exposition_parser_refuses_what_is_not_the_format() {
    for bad in [
        "9bad 1",
        "name{l=\"unterminated} 1",
        "name{l=unquoted} 1",
        "name{l=\"a\"} 1 2 3",
        "name{l=\"bad \\x escape\"} 1",
        "name 1e",
        "name",
    ] {
        assert!(sample(bad).is_err(), "{bad:?}");
    }
    let s = sample("a_total{x=\"q\\\"\\\\\\n\",le=\"+Inf\"} +Inf").unwrap();
    assert_eq!(s.labels["x"], "q\"\\\n");
    assert_eq!(s.value, f64::INFINITY);
}
