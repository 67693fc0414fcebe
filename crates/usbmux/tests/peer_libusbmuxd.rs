//! The client-socket codec against the real peer: libusbmuxd's tools (`idevice_id`,
//! `inetcat`, from Debian's libimobiledevice-utils / libusbmuxd-tools) talk to a tiny
//! daemon built on [`usbmux::socket`], through `USBMUXD_SOCKET_ADDRESS=UNIX:<path>`.
//! Skipped (with a message) when the tools are not installed.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use usbmux::socket::{
    ClientRequest, DaemonResponse, DeviceProperties, DeviceRecord, Format, Request, RequestDecoder,
    Response, ResultCode,
};

const UDID: &str = "00008101-001A2B3C4D5E6F70";
const DEVICE_ID: u32 = 7;

fn tool(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    })
}

#[derive(Default)]
struct Seen {
    requests: Vec<ClientRequest>,
    piped: Vec<u8>,
}

fn record() -> DeviceRecord {
    DeviceRecord {
        device_id: DEVICE_ID,
        properties: DeviceProperties {
            connection_type: "USB".into(),
            device_id: DEVICE_ID,
            location_id: Some(0x0001_0004),
            product_id: Some(0x12a8),
            serial_number: UDID.into(),
            connection_speed: Some(480_000_000),
            usb_serial_number: Some(UDID.replace('-', "")),
        },
    }
}

fn reply(stream: &mut UnixStream, tag: u32, format: Format, response: Response) {
    let bytes = DaemonResponse {
        tag,
        format,
        response,
    }
    .encode()
    .unwrap();
    stream.write_all(&bytes).unwrap();
}

/// One client connection of the stand-in daemon.
fn serve(mut stream: UnixStream, seen: Arc<Mutex<Seen>>) {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut decoder = RequestDecoder::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        decoder.push(&buf[..n]);
        while let Some(req) = decoder.next_request().unwrap() {
            seen.lock().unwrap().requests.push(req.clone());
            let (tag, format) = (req.tag, req.format);
            match req.request {
                Request::ListDevices => reply(
                    &mut stream,
                    tag,
                    format,
                    Response::DeviceList(vec![record()]),
                ),
                Request::Listen => {
                    reply(&mut stream, tag, format, Response::Result(ResultCode::Ok));
                    reply(&mut stream, 0, format, Response::Attached(record()));
                }
                Request::ReadBuid => reply(
                    &mut stream,
                    tag,
                    format,
                    Response::Buid("00000000-1111-2222-3333-444444444444".into()),
                ),
                Request::Connect { device_id, port } => {
                    if device_id != DEVICE_ID || port != 62078 {
                        reply(
                            &mut stream,
                            tag,
                            format,
                            Response::Result(ResultCode::ConnectionRefused),
                        );
                        continue;
                    }
                    reply(&mut stream, tag, format, Response::Result(ResultCode::Ok));
                    // From here on the socket is the device port.
                    stream.write_all(b"hello from device\n").unwrap();
                    let early = decoder.into_remaining();
                    seen.lock().unwrap().piped.extend_from_slice(&early);
                    loop {
                        match stream.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => seen.lock().unwrap().piped.extend_from_slice(&buf[..n]),
                        }
                    }
                }
                _ => reply(
                    &mut stream,
                    tag,
                    format,
                    Response::Result(ResultCode::BadCommand),
                ),
            }
        }
    }
}

fn daemon(dir: &Path) -> (PathBuf, Arc<Mutex<Seen>>) {
    let path = dir.join("usbmuxd");
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let s = seen.clone();
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let s = s.clone();
            thread::spawn(move || serve(stream, s));
        }
    });
    (path, seen)
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("usbmux-peer-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn wait(mut child: Child, limit: Duration) -> std::process::Output {
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn idevice_id_lists_our_device() {
    let Some(idevice_id) = tool("idevice_id") else {
        eprintln!("SKIP: idevice_id not installed (apt-get install libimobiledevice-utils)");
        return;
    };
    let dir = temp_dir("list");
    let (sock, seen) = daemon(&dir);
    let child = Command::new(idevice_id)
        .arg("-l")
        .env("USBMUXD_SOCKET_ADDRESS", format!("UNIX:{}", sock.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = wait(child, Duration::from_secs(10));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(UDID),
        "idevice_id printed {stdout:?} / {:?}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen = seen.lock().unwrap();
    let list = seen
        .requests
        .iter()
        .find(|r| r.request == Request::ListDevices)
        .expect("a ListDevices request");
    // What libusbmuxd puts around every request.
    assert_eq!(list.format, Format::Plist);
    assert_eq!(list.client.prog_name.as_deref(), Some("idevice_id"));
    assert_eq!(list.client.lib_usbmux_version, Some(3));
    assert!(list
        .client
        .client_version_string
        .as_deref()
        .is_some_and(|v| v.contains("libusbmuxd")));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn inetcat_connects_through_our_daemon() {
    let Some(inetcat) = tool("inetcat") else {
        eprintln!("SKIP: inetcat not installed (apt-get install libusbmuxd-tools)");
        return;
    };
    let dir = temp_dir("connect");
    let (sock, seen) = daemon(&dir);
    let mut child = Command::new(inetcat)
        .args(["-u", UDID, "62078"])
        .env("USBMUXD_SOCKET_ADDRESS", format!("UNIX:{}", sock.display()))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"ping from host\n").unwrap();
    stdin.flush().unwrap();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        if seen.lock().unwrap().piped.ends_with(b"ping from host\n") {
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    drop(stdin);
    let out = wait(child, Duration::from_millis(500));
    let seen = seen.lock().unwrap();
    let connect = seen
        .requests
        .iter()
        .find_map(|r| match r.request {
            Request::Connect { device_id, port } => Some((device_id, port)),
            _ => None,
        })
        .expect("a Connect request");
    // The port travels byte-swapped in the plist; decoded, it is the port asked for.
    assert_eq!(connect, (DEVICE_ID, 62078));
    assert_eq!(seen.piped, b"ping from host\n");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("hello from device"),
        "inetcat printed {:?} / {:?}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(dir);
}
