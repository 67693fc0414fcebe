//! The usbmuxd-compatible socket (`restation serve --usbmuxd-socket PATH`): libimobiledevice's
//! tools (`idevice_id`, `ideviceinfo`, ...) talk to it unchanged, through
//! `USBMUXD_SOCKET_ADDRESS=UNIX:PATH` or in place of `/var/run/usbmuxd`.
//!
//! The wire format (binary version 0 and plist version 1) is [`usbmux::socket`]'s; this module
//! is the thin async driver: `ListDevices` and `Listen` from the registry (normal-mode phones
//! only, each with a small `DeviceID` that stays the same for the entry), `ReadBUID` and the
//! pair-record requests from files in the pair-record directory (`/var/lib/lockdown` layout:
//! `SystemConfiguration.plist`, `<UDID>.plist`; saving one tells listeners `Paired`),
//! `ListListeners`, and `Connect`, which opens a connection over the phone's running mux
//! session ([`super::session`], one link per phone with any number of connections, as
//! usbmuxd has) and turns the socket into a raw pipe to the port. Malformed input is logged
//! and counted and closes that client only.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use irecv::mode::Mode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use usb::{DeviceId, UsbBackend};
use usbmux::socket::{
    ClientRequest, DaemonResponse, DeviceProperties, DeviceRecord, Format, Listener, Request,
    RequestDecoder, Response, ResultCode, SocketError,
};

use super::session::{MuxSession, Pump, SessionError};
use super::Shared;

/// Where libimobiledevice keeps pair records on Linux.
pub const DEFAULT_PAIR_RECORDS: &str = "/var/lib/lockdown";
/// The file holding the host's `SystemBUID`.
pub const SYSTEM_CONFIGURATION: &str = "SystemConfiguration.plist";
const READ_BUFFER: usize = 64 * 1024;
/// How long the phone may take to accept a `Connect`.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// What the usbmuxd socket shares between its clients.
pub struct Muxd {
    shared: Arc<Shared>,
    backend: Arc<dyn UsbBackend>,
    pair_records: PathBuf,
    device_ids: Mutex<HashMap<String, u32>>,
    /// One opener at a time per phone, for phones identification left without a session.
    opening: Mutex<HashMap<DeviceId, Arc<tokio::sync::Mutex<()>>>>,
    /// Clients in `Listen`, for `ListListeners`.
    listeners: Mutex<BTreeMap<u64, Listener>>,
    next_listener: AtomicU64,
    /// `DeviceID`s whose pair record was just saved, for listeners.
    paired: tokio::sync::broadcast::Sender<u32>,
}

impl std::fmt::Debug for Muxd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Muxd")
            .field("pair_records", &self.pair_records)
            .finish_non_exhaustive()
    }
}

/// One normal-mode phone as usbmuxd clients see it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Attached {
    record: DeviceRecord,
    usb: DeviceId,
}

impl Muxd {
    /// A usbmuxd front for `shared`'s registry; `Connect` opens devices through `backend`.
    pub fn new(
        shared: Arc<Shared>,
        backend: Arc<dyn UsbBackend>,
        pair_records: PathBuf,
    ) -> Arc<Self> {
        Arc::new(Self {
            shared,
            backend,
            pair_records,
            device_ids: Mutex::new(HashMap::new()),
            opening: Mutex::new(HashMap::new()),
            listeners: Mutex::new(BTreeMap::new()),
            next_listener: AtomicU64::new(1),
            paired: tokio::sync::broadcast::channel(64).0,
        })
    }

    fn device_id(&self, entry: &str) -> u32 {
        let mut ids = self
            .device_ids
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let next = u32::try_from(ids.len())
            .unwrap_or(u32::MAX)
            .saturating_add(1);
        *ids.entry(entry.to_string()).or_insert(next)
    }

    /// The normal-mode phones present now, by `DeviceID`.
    fn attached(&self) -> BTreeMap<u32, Attached> {
        let phones: Vec<(String, DeviceId, String, Option<u64>)> = self
            .shared
            .registry()
            .entries()
            .filter(|e| e.present && e.mode == Mode::Normal)
            .filter_map(|e| {
                Some((
                    e.id.clone(),
                    e.device?,
                    e.identity.udid.clone()?,
                    e.speed.bits_per_second(),
                ))
            })
            .collect();
        phones
            .into_iter()
            .map(|(entry, usb, udid, speed)| {
                let device_id = self.device_id(&entry);
                let record = DeviceRecord {
                    device_id,
                    properties: DeviceProperties {
                        connection_type: "USB".into(),
                        device_id,
                        location_id: Some(u32::from(usb.bus) << 16 | u32::from(usb.address)),
                        product_id: None,
                        serial_number: udid,
                        connection_speed: Some(speed.unwrap_or(480_000_000)),
                        usb_serial_number: None,
                    },
                };
                (device_id, Attached { record, usb })
            })
            .collect()
    }

    /// [`Muxd::attached`] with USB product ids filled in (asks the backend off the runtime).
    async fn attached_with_products(&self) -> BTreeMap<u32, Attached> {
        let mut attached = self.attached();
        let backend = Arc::clone(&self.backend);
        let products: HashMap<DeviceId, u16> = tokio::task::spawn_blocking(move || {
            backend
                .devices()
                .map(|list| {
                    list.into_iter()
                        .map(|d| (d.id, d.product_id()))
                        .collect::<HashMap<_, _>>()
                })
                .unwrap_or_default()
        })
        .await
        .unwrap_or_default();
        for a in attached.values_mut() {
            a.record.properties.product_id = products.get(&a.usb).copied();
        }
        attached
    }

    /// The phone's running mux session; one is opened when identification left none.
    async fn session(&self, usb: DeviceId) -> Result<MuxSession, SessionError> {
        let running = |shared: &Shared| {
            let mut sessions = shared.sessions();
            sessions.retain(|_, s| s.is_alive());
            sessions.get(&usb).cloned()
        };
        if let Some(session) = running(&self.shared) {
            return Ok(session);
        }
        let lock = Arc::clone(
            self.opening
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .entry(usb)
                .or_default(),
        );
        let _held = lock.lock().await;
        if let Some(session) = running(&self.shared) {
            return Ok(session);
        }
        let backend = Arc::clone(&self.backend);
        let session = tokio::task::spawn_blocking(move || {
            let dev = backend.open(usb)?;
            Pump::open(dev)?.into_session(format!("mux-{usb}"))
        })
        .await
        .map_err(|_| SessionError::Ended)??;
        self.shared.sessions().insert(usb, session.clone());
        Ok(session)
    }

    fn pair_record_path(&self, id: &str) -> Option<PathBuf> {
        let ok = !id.is_empty()
            && id.len() <= 128
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        ok.then(|| self.pair_records.join(format!("{id}.plist")))
    }
}

/// Binds the usbmuxd socket (a stale socket file is replaced; the mode is the API's).
pub fn bind(path: &Path) -> Result<UnixListener, super::api::ApiError> {
    super::api::bind(path)
}

/// Serves clients on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: UnixListener,
    muxd: Arc<Muxd>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let muxd = Arc::clone(&muxd);
                    tokio::spawn(async move { client(muxd, stream).await });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "usbmuxd socket: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
        }
    }
}

async fn send(stream: &mut UnixStream, tag: u32, format: Format, response: Response) -> bool {
    let bytes = match (DaemonResponse {
        tag,
        format,
        response,
    })
    .encode()
    {
        Ok(bytes) => bytes,
        Err(e) => {
            tracing::warn!(error = %e, "usbmuxd socket: cannot encode a reply");
            return false;
        }
    };
    stream.write_all(&bytes).await.is_ok()
}

async fn client(muxd: Arc<Muxd>, mut stream: UnixStream) {
    let mut decoder = RequestDecoder::new();
    let mut buf = vec![0u8; READ_BUFFER];
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        decoder.push(buf.get(..n).unwrap_or_default());
        loop {
            let request = match decoder.next_request() {
                Ok(Some(request)) => request,
                Ok(None) => break,
                Err(SocketError::UnknownRequest(kind)) => {
                    tracing::info!(kind, "usbmuxd socket: unknown request");
                    if !send(
                        &mut stream,
                        0,
                        Format::Plist,
                        result(ResultCode::BadCommand),
                    )
                    .await
                    {
                        return;
                    }
                    continue;
                }
                Err(e) => {
                    let count = muxd
                        .shared
                        .usbmuxd_malformed
                        .fetch_add(1, Ordering::Relaxed)
                        + 1;
                    tracing::warn!(error = %e, count, "usbmuxd socket: malformed request; closing");
                    return;
                }
            };
            tracing::debug!(kind = request.request.message_type(), prog = ?request.client.prog_name, "usbmuxd request");
            match request.request {
                Request::Listen => return listen(&muxd, stream, &request).await,
                Request::Connect { device_id, port } => {
                    let early = decoder.into_remaining().to_vec();
                    return connect(&muxd, stream, &request, device_id, port, early).await;
                }
                _ => {
                    let reply = answer(&muxd, &request).await;
                    if !send(&mut stream, request.tag, request.format, reply).await {
                        return;
                    }
                }
            }
        }
    }
}

fn result(code: ResultCode) -> Response {
    Response::Result(code)
}

async fn answer(muxd: &Muxd, request: &ClientRequest) -> Response {
    match &request.request {
        Request::ListDevices => Response::DeviceList(
            muxd.attached_with_products()
                .await
                .into_values()
                .map(|a| a.record)
                .collect(),
        ),
        Request::ReadBuid => match system_buid(&muxd.pair_records).await {
            Ok(buid) => Response::Buid(buid),
            Err(e) => {
                tracing::warn!(error = %e, "usbmuxd socket: no SystemBUID");
                result(ResultCode::BadDevice)
            }
        },
        Request::ReadPairRecord { pair_record_id } => match muxd.pair_record_path(pair_record_id) {
            Some(path) => match tokio::fs::read(&path).await {
                Ok(data) => Response::PairRecordData(data),
                Err(_) => result(ResultCode::BadDevice),
            },
            None => result(ResultCode::BadCommand),
        },
        Request::SavePairRecord {
            pair_record_id,
            data,
            ..
        } => match muxd.pair_record_path(pair_record_id) {
            Some(path) => match write_file(&path, data).await {
                Ok(()) => {
                    let attached = muxd.attached();
                    let paired = attached
                        .values()
                        .find(|a| a.record.properties.serial_number == *pair_record_id);
                    if let Some(a) = paired {
                        // No listener is fine.
                        let _ = muxd.paired.send(a.record.device_id);
                    }
                    result(ResultCode::Ok)
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot save a pair record");
                    result(ResultCode::BadDevice)
                }
            },
            None => result(ResultCode::BadCommand),
        },
        Request::DeletePairRecord { pair_record_id } => {
            match muxd.pair_record_path(pair_record_id) {
                Some(path) => match tokio::fs::remove_file(&path).await {
                    Ok(()) => result(ResultCode::Ok),
                    Err(_) => result(ResultCode::BadDevice),
                },
                None => result(ResultCode::BadCommand),
            }
        }
        Request::ListListeners => Response::ListenerList(
            muxd.listeners
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .values()
                .cloned()
                .collect(),
        ),
        Request::Listen | Request::Connect { .. } => result(ResultCode::BadCommand),
    }
}

async fn write_file(path: &Path, data: &[u8]) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        tokio::fs::create_dir_all(dir).await?;
    }
    // Pair records hold private keys: owner-only, written whole then renamed into place.
    let tmp = path.with_extension("plist.tmp");
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .await?;
    file.write_all(data).await?;
    file.sync_all().await?;
    drop(file);
    tokio::fs::rename(&tmp, path).await
}

/// The host's `SystemBUID` from `SystemConfiguration.plist` in `dir`, created when absent.
pub async fn system_buid(dir: &Path) -> io::Result<String> {
    let path = dir.join(SYSTEM_CONFIGURATION);
    if let Ok(bytes) = tokio::fs::read(&path).await {
        let buid = plist::Value::from_reader(io::Cursor::new(bytes))
            .ok()
            .and_then(|v| {
                v.as_dictionary()
                    .and_then(|d| d.get("SystemBUID"))
                    .and_then(plist::Value::as_string)
                    .map(str::to_string)
            });
        if let Some(buid) = buid {
            return Ok(buid);
        }
    }
    let buid = new_buid().await?;
    let mut dict = plist::Dictionary::new();
    dict.insert("SystemBUID".into(), plist::Value::String(buid.clone()));
    let mut bytes = Vec::new();
    plist::Value::Dictionary(dict)
        .to_writer_xml(&mut bytes)
        .map_err(io::Error::other)?;
    write_file(&path, &bytes).await?;
    Ok(buid)
}

/// A random UUID-shaped BUID (`8-4-4-4-12` upper-case hex), from the kernel's generator.
async fn new_buid() -> io::Result<String> {
    let mut raw = [0u8; 16];
    let mut f = tokio::fs::File::open("/dev/urandom").await?;
    f.read_exact(&mut raw).await?;
    let hex: String = raw.iter().map(|b| format!("{b:02X}")).collect();
    let part = |a: usize, b: usize| hex.get(a..b).unwrap_or_default().to_string();
    Ok(format!(
        "{}-{}-{}-{}-{}",
        part(0, 8),
        part(8, 12),
        part(12, 16),
        part(16, 20),
        part(20, 32)
    ))
}

/// Removes a listener from `ListListeners` when its client goes.
struct Listening<'a> {
    muxd: &'a Muxd,
    id: u64,
}

impl Drop for Listening<'_> {
    fn drop(&mut self) {
        self.muxd
            .listeners
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&self.id);
    }
}

async fn listen(muxd: &Muxd, mut stream: UnixStream, request: &ClientRequest) {
    let format = request.format;
    let mut events = muxd.shared.subscribe();
    let mut paired = muxd.paired.subscribe();
    if !send(&mut stream, request.tag, format, result(ResultCode::Ok)).await {
        return;
    }
    let id = muxd.next_listener.fetch_add(1, Ordering::Relaxed);
    let client = &request.client;
    muxd.listeners
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .insert(
            id,
            Listener {
                blacklisted: false,
                bundle_id: client.bundle_id.clone(),
                conn_type: 0,
                id_string: Some(id.to_string()),
                prog_name: client.prog_name.clone(),
                client_version_string: client.client_version_string.clone(),
                lib_usbmux_version: client.lib_usbmux_version,
            },
        );
    let _listening = Listening { muxd, id };
    let mut sent: BTreeMap<u32, Attached> = BTreeMap::new();
    let mut buf = [0u8; 256];
    loop {
        let now = muxd.attached_with_products().await;
        for id in sent.keys().filter(|id| !now.contains_key(id)) {
            if !send(
                &mut stream,
                0,
                format,
                Response::Detached { device_id: *id },
            )
            .await
            {
                return;
            }
        }
        for (id, a) in &now {
            if !sent.contains_key(id)
                && !send(&mut stream, 0, format, Response::Attached(a.record.clone())).await
            {
                return;
            }
        }
        sent = now;
        tokio::select! {
            got = paired.recv() => match got {
                Ok(device_id) if sent.contains_key(&device_id) => {
                    if !send(&mut stream, 0, format, Response::Paired { device_id }).await {
                        return;
                    }
                }
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            },
            got = events.recv() => match got {
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            },
            read = stream.read(&mut buf) => match read {
                // A listening client says nothing more; anything is ignored, EOF ends it.
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            },
        }
    }
}

async fn connect(
    muxd: &Muxd,
    mut stream: UnixStream,
    request: &ClientRequest,
    device_id: u32,
    port: u16,
    early: Vec<u8>,
) {
    let (tag, format) = (request.tag, request.format);
    let Some(target) = muxd.attached().remove(&device_id) else {
        let _ = send(&mut stream, tag, format, result(ResultCode::BadDevice)).await;
        return;
    };
    let opened = match muxd.session(target.usb).await {
        Ok(session) => session.connect(port, CONNECT_TIMEOUT).await,
        Err(e) => Err(e),
    };
    let phone = match opened {
        Ok(phone) => phone,
        Err(e) => {
            tracing::info!(device_id, port, error = %e, "usbmuxd Connect refused");
            let _ = send(
                &mut stream,
                tag,
                format,
                result(ResultCode::ConnectionRefused),
            )
            .await;
            return;
        }
    };
    if !send(&mut stream, tag, format, result(ResultCode::Ok)).await {
        return;
    }
    tracing::debug!(device_id, port, "usbmuxd Connect: piping");
    let (to_phone, mut from_phone) = (phone.writer, phone.reader);
    if !early.is_empty() && to_phone.send(early).await.is_err() {
        return;
    }
    let (mut read_half, mut write_half) = stream.into_split();
    let upstream = async move {
        let mut buf = vec![0u8; READ_BUFFER];
        loop {
            match read_half.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    let bytes = buf.get(..n).unwrap_or_default().to_vec();
                    if to_phone.send(bytes).await.is_err() {
                        return;
                    }
                }
            }
        }
    };
    let downstream = async move {
        while let Some(bytes) = from_phone.recv().await {
            if write_half.write_all(&bytes).await.is_err() {
                return;
            }
        }
        let _ = write_half.shutdown().await;
    };
    // Either side ending ends the pipe: dropping the writer closes the mux connection once
    // what was sent has gone out; dropping the reader stops taking from the phone.
    tokio::select! {
        () = upstream => {}
        () = downstream => {}
    }
}
