//! `restation serve --sim 3 --usbmuxd-socket B` as a child process, spoken to as usbmuxd:
//! Debian's `idevice_id -l` and `ideviceinfo -s` pointed at it with
//! `USBMUXD_SOCKET_ADDRESS=UNIX:B` (skipped with a message when the tools are absent), and the
//! same path in pure Rust with usbmux's socket codec as the client: ListDevices, Listen,
//! ReadBUID, the pair-record requests, Connect to lockdownd and a GetValue through the pipe,
//! junk that closes one client while the daemon keeps serving. Every wait has a deadline.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use usbmux::socket::{
    ClientInfo, ClientRequest, DaemonResponse, Format, Request, Response, ResponseDecoder,
    ResultCode,
};

mod common;
use common::poll_until;

const DEADLINE: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(20);

/// Kills the daemon when the test ends, however it ends.
struct Daemon {
    child: Child,
    dir: PathBuf,
    api: PathBuf,
    muxd: PathBuf,
    pair_records: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start(name: &str) -> Daemon {
    let dir = std::env::temp_dir().join(format!("restation-muxd-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let api = dir.join("restation.sock");
    let muxd = dir.join("usbmuxd");
    let pair_records = dir.join("lockdown");
    let child = Command::new(env!("CARGO_BIN_EXE_restation"))
        .args(["serve", "--sim", "3", "--socket"])
        .arg(&api)
        .arg("--usbmuxd-socket")
        .arg(&muxd)
        .arg("--pair-records")
        .arg(&pair_records)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start restation serve");
    let daemon = Daemon {
        child,
        dir,
        api,
        muxd,
        pair_records,
    };
    poll_until(DEADLINE, "the usbmuxd socket", || {
        UnixStream::connect(&daemon.muxd).ok().map(|_| ())
    });
    daemon
}

/// The normal-mode phone as the daemon's own API shows it, once identified.
fn normal_phone(daemon: &Daemon) -> serde_json::Value {
    poll_until(DEADLINE, "an identified normal-mode phone", || {
        let out = Command::new(env!("CARGO_BIN_EXE_restation"))
            .args(["devices", "--json", "--socket"])
            .arg(&daemon.api)
            .output()
            .ok()?;
        let list: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).ok()?;
        list.into_iter().find(|e| {
            e["mode"] == "normal"
                && e["identity"]["ecid"].is_u64()
                && e["identity"]["udid"].is_string()
        })
    })
}

fn tool(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    })
}

fn run_tool(tool: &Path, args: &[&str], socket: &Path) -> Output {
    let mut child = Command::new(tool)
        .args(args)
        .env(
            "USBMUXD_SOCKET_ADDRESS",
            format!("UNIX:{}", socket.display()),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let end = Instant::now() + DEADLINE;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > end {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(POLL);
    }
    child.wait_with_output().unwrap()
}

#[test]
fn idevice_id_and_ideviceinfo_work_through_restation() {
    let (Some(idevice_id), Some(ideviceinfo)) = (tool("idevice_id"), tool("ideviceinfo")) else {
        eprintln!(
            "SKIP: idevice_id/ideviceinfo not installed (apt-get install libimobiledevice-utils)"
        );
        return;
    };
    let daemon = start("tools");
    let phone = normal_phone(&daemon);
    let udid = phone["identity"]["udid"].as_str().unwrap().to_string();
    let ecid = phone["identity"]["ecid"].as_u64().unwrap();
    let product_type = phone["identity"]["product_type"]
        .as_str()
        .unwrap()
        .to_string();

    let out = run_tool(&idevice_id, &["-l"], &daemon.muxd);
    let listed = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("idevice_id -l printed: {listed:?}");
    assert!(
        listed.lines().any(|l| l.trim() == udid),
        "idevice_id -l printed {listed:?} / {:?}, expected {udid}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = run_tool(&ideviceinfo, &["-s", "-u", &udid], &daemon.muxd);
    let info = String::from_utf8_lossy(&out.stdout).into_owned();
    let value = |key: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(key))
            .map(|v| v.trim().to_string())
    };
    eprintln!(
        "ideviceinfo -s printed {} lines; ProductType: {:?}, UniqueChipID: {:?}",
        info.lines().count(),
        value("ProductType:"),
        value("UniqueChipID:")
    );
    assert_eq!(
        value("ProductType:").as_deref(),
        Some(product_type.as_str()),
        "ideviceinfo printed {info:?} / {:?}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(value("UniqueChipID:"), Some(ecid.to_string()));

    // Four at once: each Connect is a new connection over the phone's one mux session.
    std::thread::scope(|scope| {
        let runs: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(|| {
                    run_tool(
                        &ideviceinfo,
                        &["-s", "-u", &udid, "-k", "ProductType"],
                        &daemon.muxd,
                    )
                })
            })
            .collect();
        for run in runs {
            let out = run.join().unwrap();
            assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), product_type);
        }
    });
}

/// A usbmuxd client built on usbmux's socket codec.
struct Client {
    stream: UnixStream,
    decoder: ResponseDecoder,
    tag: u32,
}

impl Client {
    fn connect(path: &Path) -> Client {
        let stream = UnixStream::connect(path).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        Client {
            stream,
            decoder: ResponseDecoder::new(),
            tag: 0,
        }
    }

    fn send(&mut self, format: Format, request: Request) -> u32 {
        self.tag += 1;
        let bytes = ClientRequest {
            tag: self.tag,
            format,
            client: if format == Format::Plist {
                ClientInfo::new("usbmuxd_compat")
            } else {
                ClientInfo::default()
            },
            request,
        }
        .encode()
        .unwrap();
        self.stream.write_all(&bytes).unwrap();
        self.tag
    }

    fn next(&mut self) -> DaemonResponse {
        let mut buf = [0u8; 4096];
        loop {
            if let Some(r) = self.decoder.next_response().unwrap() {
                return r;
            }
            let n = self.stream.read(&mut buf).unwrap();
            assert!(n > 0, "the daemon closed the connection");
            self.decoder.push(&buf[..n]);
        }
    }

    fn ask(&mut self, format: Format, request: Request) -> Response {
        let tag = self.send(format, request);
        let reply = self.next();
        assert_eq!(reply.tag, tag);
        reply.response
    }
}

#[test]
fn usbmux_codec_client_lists_listens_pairs_and_connects() {
    let daemon = start("codec");
    let phone = normal_phone(&daemon);
    let udid = phone["identity"]["udid"].as_str().unwrap().to_string();
    let ecid = phone["identity"]["ecid"].as_u64().unwrap();
    let bus = phone["device"]["bus"].as_u64().unwrap();
    let address = phone["device"]["address"].as_u64().unwrap();

    // ListDevices: the normal-mode phone only (the others are in recovery and DFU).
    let mut client = Client::connect(&daemon.muxd);
    let Response::DeviceList(list) = client.ask(Format::Plist, Request::ListDevices) else {
        panic!("ListDevices did not answer a DeviceList");
    };
    assert_eq!(list.len(), 1, "{list:?}");
    let record = &list[0];
    assert_eq!(record.properties.serial_number, udid);
    assert_eq!(record.properties.connection_type, "USB");
    assert_eq!(record.properties.device_id, record.device_id);
    assert_eq!(
        record.properties.location_id.map(u64::from),
        Some(bus << 16 | address)
    );
    assert_eq!(record.properties.connection_speed, Some(480_000_000));
    assert!(record.properties.product_id.is_some());
    let device_id = record.device_id;

    // ReadBUID: made once, kept in SystemConfiguration.plist.
    let Response::Buid(buid) = client.ask(Format::Plist, Request::ReadBuid) else {
        panic!("ReadBUID did not answer a BUID");
    };
    assert_eq!(buid.len(), 36, "{buid}");
    assert_eq!(
        client.ask(Format::Plist, Request::ReadBuid),
        Response::Buid(buid)
    );
    assert!(daemon
        .pair_records
        .join("SystemConfiguration.plist")
        .is_file());

    // Pair records: save, read back, delete, then gone.
    let record_bytes = b"<?xml version=\"1.0\"?><plist version=\"1.0\"><dict/></plist>".to_vec();
    assert_eq!(
        client.ask(
            Format::Plist,
            Request::SavePairRecord {
                pair_record_id: udid.clone(),
                data: record_bytes.clone(),
                device_id: Some(device_id),
            }
        ),
        Response::Result(ResultCode::Ok)
    );
    let saved = daemon.pair_records.join(format!("{udid}.plist"));
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&saved).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "pair records are owner-only");
    assert_eq!(
        client.ask(
            Format::Plist,
            Request::ReadPairRecord {
                pair_record_id: udid.clone()
            }
        ),
        Response::PairRecordData(record_bytes)
    );
    assert_eq!(
        client.ask(
            Format::Plist,
            Request::DeletePairRecord {
                pair_record_id: udid.clone()
            }
        ),
        Response::Result(ResultCode::Ok)
    );
    assert!(matches!(
        client.ask(
            Format::Plist,
            Request::ReadPairRecord {
                pair_record_id: udid.clone()
            }
        ),
        Response::Result(code) if code != ResultCode::Ok
    ));
    // A path in the id is refused, not followed.
    assert!(matches!(
        client.ask(
            Format::Plist,
            Request::ReadPairRecord {
                pair_record_id: "../etc/passwd".into()
            }
        ),
        Response::Result(code) if code != ResultCode::Ok
    ));
    drop(client);

    // Listen, in binary (version 0) as old clients send it: Result 0, then Attached.
    let mut listener = Client::connect(&daemon.muxd);
    assert_eq!(
        listener.ask(Format::Binary, Request::Listen),
        Response::Result(ResultCode::Ok)
    );
    let Response::Attached(attached) = listener.next().response else {
        panic!("Listen did not announce the phone");
    };
    assert_eq!(attached.device_id, device_id);
    assert_eq!(attached.properties.serial_number, udid);
    drop(listener);

    // Connect to a port nobody listens on: refused.
    let mut refused = Client::connect(&daemon.muxd);
    assert_eq!(
        refused.ask(
            Format::Plist,
            Request::Connect {
                device_id,
                port: 1234
            }
        ),
        Response::Result(ResultCode::ConnectionRefused)
    );
    // An unknown DeviceID: refused too, without touching USB.
    let mut unknown = Client::connect(&daemon.muxd);
    assert!(matches!(
        unknown.ask(
            Format::Plist,
            Request::Connect {
                device_id: 999,
                port: 62078
            }
        ),
        Response::Result(code) if code != ResultCode::Ok
    ));

    // Connect to lockdownd: Result 0, then the socket is the device port.
    let mut pipe = Client::connect(&daemon.muxd);
    assert_eq!(
        pipe.ask(
            Format::Plist,
            Request::Connect {
                device_id,
                port: 62078
            }
        ),
        Response::Result(ResultCode::Ok)
    );
    assert_eq!(
        unique_chip_id(&mut pipe),
        Some(ecid),
        "UniqueChipID through the pipe"
    );

    // A second connection while the first is open: both ride the phone's one mux session.
    let mut second = Client::connect(&daemon.muxd);
    assert_eq!(
        second.ask(
            Format::Plist,
            Request::Connect {
                device_id,
                port: 62078
            }
        ),
        Response::Result(ResultCode::Ok)
    );
    assert_eq!(unique_chip_id(&mut second), Some(ecid), "second connection");
    assert_eq!(
        unique_chip_id(&mut pipe),
        Some(ecid),
        "first connection, again"
    );
    drop((pipe, second));

    // ListListeners names a listening client; saving a pair record tells it `Paired`.
    let mut listener = Client::connect(&daemon.muxd);
    assert_eq!(
        listener.ask(Format::Plist, Request::Listen),
        Response::Result(ResultCode::Ok)
    );
    assert!(matches!(listener.next().response, Response::Attached(_)));
    let mut asker = Client::connect(&daemon.muxd);
    let Response::ListenerList(listeners) = asker.ask(Format::Plist, Request::ListListeners) else {
        panic!("ListListeners did not answer a ListenerList");
    };
    assert_eq!(listeners.len(), 1, "{listeners:?}");
    assert_eq!(listeners[0].prog_name.as_deref(), Some("usbmuxd_compat"));
    assert_eq!(
        asker.ask(
            Format::Plist,
            Request::SavePairRecord {
                pair_record_id: udid.clone(),
                data: b"<?xml version=\"1.0\"?><plist version=\"1.0\"><dict/></plist>".to_vec(),
                device_id: Some(device_id),
            }
        ),
        Response::Result(ResultCode::Ok)
    );
    assert_eq!(listener.next().response, Response::Paired { device_id });
    drop(listener);
    poll_until(
        DEADLINE,
        "the gone listener to leave ListListeners",
        || match asker.ask(Format::Plist, Request::ListListeners) {
            Response::ListenerList(l) if l.is_empty() => Some(()),
            _ => None,
        },
    );
}

/// `GetValue UniqueChipID` over a client whose socket is a pipe to lockdownd.
fn unique_chip_id(pipe: &mut Client) -> Option<u64> {
    let mut codec = lockdown::HostCodec::new().with_label("usbmuxd_compat");
    let mut wire = Vec::new();
    codec
        .encode_request(
            &lockdown::Request::GetValue {
                domain: None,
                key: Some("UniqueChipID".into()),
            },
            &mut wire,
        )
        .unwrap();
    pipe.stream.write_all(&wire).unwrap();
    let early = pipe.decoder.take_remaining();
    codec.receive(&early);
    let mut buf = [0u8; 4096];
    let reply = loop {
        if let Some(reply) = codec.poll_reply().unwrap() {
            break reply;
        }
        let n = pipe.stream.read(&mut buf).unwrap();
        assert!(n > 0, "the pipe closed before lockdownd answered");
        codec.receive(&buf[..n]);
    };
    let lockdown::Reply::GetValue { value, .. } = lockdown::check_reply("GetValue", reply).unwrap()
    else {
        panic!("not a GetValue reply");
    };
    value.and_then(|v| v.as_unsigned_integer())
}

#[test]
fn junk_closes_one_client_and_the_daemon_keeps_serving() {
    let daemon = start("junk");
    normal_phone(&daemon);
    // A header claiming a 4 GiB message, then garbage: the daemon hangs up.
    let mut junk = UnixStream::connect(&daemon.muxd).unwrap();
    junk.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    junk.write_all(&[0xFF; 16]).unwrap();
    // The daemon may have hung up already.
    let _ = junk.write_all(b"not usbmuxd at all");
    let mut rest = Vec::new();
    let _ = junk.read_to_end(&mut rest);
    assert!(rest.is_empty(), "junk got an answer: {rest:?}");

    // An unknown MessageType: Result 1 (BADCOMMAND), and the connection stays usable.
    let mut client = Client::connect(&daemon.muxd);
    let mut dict = plist::Dictionary::new();
    dict.insert("MessageType".into(), "Frobnicate".into());
    let mut payload = Vec::new();
    plist::Value::Dictionary(dict)
        .to_writer_xml(&mut payload)
        .unwrap();
    let mut frame = Vec::new();
    frame.extend_from_slice(&(16 + payload.len() as u32).to_le_bytes());
    frame.extend_from_slice(&1u32.to_le_bytes()); // plist
    frame.extend_from_slice(&8u32.to_le_bytes()); // MESSAGE_PLIST
    frame.extend_from_slice(&5u32.to_le_bytes()); // tag
    frame.extend_from_slice(&payload);
    client.stream.write_all(&frame).unwrap();
    assert_eq!(
        client.next().response,
        Response::Result(ResultCode::BadCommand)
    );
    let Response::DeviceList(list) = client.ask(Format::Plist, Request::ListDevices) else {
        panic!("ListDevices did not answer a DeviceList after junk");
    };
    assert_eq!(list.len(), 1);
}
