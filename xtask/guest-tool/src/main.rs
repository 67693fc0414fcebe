//! `vm-guest-tool`: what the VM bench's guest script needs that the Debian image has no tool
//! for. Built on the host by `cargo xtask vm` (its own workspace, with the `usb` crate's
//! libusb backend) and run in the guest from the 9p share.
//!
//! - `usbmon --bus N --out FILE`: records `/dev/usbmonN` through the kernel's binary
//!   interface (`MON_IOCX_GETX`: the 64-byte header and the data of each event) into a pcap
//!   file with link type 220, until SIGTERM/SIGINT; then drains what is queued and prints
//!   `records=N dropped=D` (the kernel's own count of events lost to a full ring).
//! - `upload --bus B --address A --file FILE`: restation's host code for the phone's mode
//!   (`irecv::dfu::run_download` in DFU, `irecv::recovery::claim_interfaces` +
//!   `run_upload_cancellable` in recovery, exactly as a restore job calls them) over the
//!   libusb backend. It first reads the device and configuration descriptors, so a capture of
//!   the upload holds what a replay needs to present the device.
//! - `mux-echo --socket PATH --udid UDID --port P --bytes N`: connects to device port P through
//!   a usbmuxd-compatible socket and streams N bytes through the phone's echo service, checking
//!   every byte that comes back.
//! - `pattern --bytes N`: N bytes of the bench's deterministic test pattern on stdout (the
//!   same bytes `crates/sim/tests/vm_traces.rs` rebuilds to replay the recorded uploads).

use std::fs::File;
use std::io::{Read, Write};
use std::ops::ControlFlow;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use usb::{descriptor_type, Control, DeviceId, UsbDevice};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let outcome = match args.first().map(String::as_str) {
        Some("usbmon") => usbmon(&Opts(&args[1..])),
        Some("upload") => upload(&Opts(&args[1..])),
        Some("mux-echo") => mux_echo(&Opts(&args[1..])),
        Some("pattern") => pattern_cmd(&Opts(&args[1..])),
        _ => Err(anyhow::anyhow!(
            "usage: vm-guest-tool usbmon|upload|mux-echo|pattern [--option value]..."
        )),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vm-guest-tool: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `--name value` options.
struct Opts<'a>(&'a [String]);

impl Opts<'_> {
    fn get(&self, name: &str) -> Option<&str> {
        let flag = format!("--{name}");
        self.0
            .iter()
            .position(|a| *a == flag)
            .and_then(|i| self.0.get(i + 1))
            .map(String::as_str)
    }

    fn need(&self, name: &str) -> Result<&str> {
        self.get(name)
            .with_context(|| format!("--{name} is required"))
    }

    fn number(&self, name: &str) -> Result<u64> {
        let text = self.need(name)?;
        match text.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16),
            None => text.parse(),
        }
        .with_context(|| format!("--{name} {text}: not a number"))
    }
}

/// The bench's test pattern: a 64-bit LCG's high bytes (deterministic, not compressible by
/// accident, cheap to rebuild in a test).
pub fn pattern(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x5245_5354_4154_494f; // "RESTATIO"
    (0..len)
        .map(|_| {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (x >> 56) as u8
        })
        .collect()
}

fn pattern_cmd(opts: &Opts) -> Result<()> {
    let n = opts.number("bytes")? as usize;
    std::io::stdout().lock().write_all(&pattern(n))?;
    Ok(())
}

// --- usbmon ---------------------------------------------------------------------------------

/// `_IO(0x92, 4)`: set the ring size.
const MON_IOCT_RING_SIZE: libc::c_ulong = 0x9204;
/// `_IOR(0x92, 3, struct mon_bin_stats)`: events queued and dropped.
const MON_IOCG_STATS: libc::c_ulong = 0x8008_9203;
/// `_IOW(0x92, 10, struct mon_bin_get)`: one event, 64-byte header and data.
const MON_IOCX_GETX: libc::c_ulong = 0x4018_920a;
/// The kernel's largest ring (`BUFF_MAX`, 1200 KiB).
const RING_MAX: libc::c_ulong = 1200 * 1024;
const HEADER_LEN: usize = 64;
const LINKTYPE_USB_LINUX_MMAPPED: u32 = 220;

#[repr(C)]
struct MonBinGet {
    hdr: *mut u8,
    data: *mut u8,
    alloc: libc::size_t,
}

#[repr(C)]
#[derive(Default)]
struct MonBinStats {
    queued: u32,
    dropped: u32,
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn usbmon(opts: &Opts) -> Result<()> {
    let bus = opts.number("bus")?;
    let out_path = opts.need("out")?;
    let dev = format!("/dev/usbmon{bus}");
    let file = std::fs::OpenOptions::new()
        .read(true)
        .open(&dev)
        .with_context(|| format!("opening {dev} (modprobe usbmon)"))?;
    let fd = file.as_raw_fd();
    // SAFETY: plain ioctl/fcntl/sigaction calls on a file descriptor we own, with arguments
    // of the types the kernel documents for them.
    unsafe {
        libc::ioctl(fd, MON_IOCT_RING_SIZE as _, RING_MAX);
        let flags = libc::fcntl(fd, libc::F_GETFL);
        libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_signal as *const () as usize;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGTERM, &action, std::ptr::null_mut());
        libc::sigaction(libc::SIGINT, &action, std::ptr::null_mut());
    }
    let mut out = File::create(out_path).with_context(|| format!("creating {out_path}"))?;
    let mut global = Vec::with_capacity(24);
    global.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    global.extend_from_slice(&2u16.to_le_bytes());
    global.extend_from_slice(&4u16.to_le_bytes());
    global.extend_from_slice(&0i32.to_le_bytes());
    global.extend_from_slice(&0u32.to_le_bytes());
    global.extend_from_slice(&((1u32 << 20) + HEADER_LEN as u32).to_le_bytes());
    global.extend_from_slice(&LINKTYPE_USB_LINUX_MMAPPED.to_le_bytes());
    out.write_all(&global)?;
    let mut header = [0u8; HEADER_LEN];
    let mut data = vec![0u8; 1 << 20];
    let mut records = 0u64;
    let mut next = |out: &mut File| -> Result<bool> {
        let mut get = MonBinGet {
            hdr: header.as_mut_ptr(),
            data: data.as_mut_ptr(),
            alloc: data.len(),
        };
        // SAFETY: `get` points at buffers of the sizes it declares, alive for the call.
        let r = unsafe { libc::ioctl(fd, MON_IOCX_GETX as _, &mut get) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::EAGAIN) | Some(libc::EINTR) => Ok(false),
                _ => Err(e).context("MON_IOCX_GETX"),
            };
        }
        let len_cap = u32::from_le_bytes([header[36], header[37], header[38], header[39]]);
        let kept = (len_cap as usize).min(data.len());
        header[36..40].copy_from_slice(&(kept as u32).to_le_bytes());
        let sec = i64::from_le_bytes(header[16..24].try_into().unwrap_or([0; 8]));
        let usec = i32::from_le_bytes(header[24..28].try_into().unwrap_or([0; 4]));
        let len = (HEADER_LEN + kept) as u32;
        let mut record = Vec::with_capacity(16 + len as usize);
        record.extend_from_slice(&(sec as u32).to_le_bytes());
        record.extend_from_slice(&(usec as u32).to_le_bytes());
        record.extend_from_slice(&len.to_le_bytes());
        record.extend_from_slice(&len.to_le_bytes());
        record.extend_from_slice(&header);
        record.extend_from_slice(&data[..kept]);
        // one write per record: a capture stopped at any moment holds whole records
        out.write_all(&record)?;
        records += 1;
        Ok(true)
    };
    loop {
        let stopping = STOP.load(Ordering::SeqCst);
        while next(&mut out)? {}
        if stopping {
            break;
        }
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut pfd, 1, 200) };
    }
    let mut stats = MonBinStats::default();
    // SAFETY: the kernel writes a struct mon_bin_stats.
    unsafe { libc::ioctl(fd, MON_IOCG_STATS as _, &mut stats) };
    eprintln!("records={records} dropped={}", stats.dropped);
    Ok(())
}

// --- restation's uploads --------------------------------------------------------------------

fn cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the struct.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn upload(opts: &Opts) -> Result<()> {
    let id = DeviceId {
        bus: opts.number("bus")? as u8,
        address: opts.number("address")? as u8,
    };
    let path = opts.need("file")?;
    let data = std::fs::read(path).with_context(|| format!("reading {path}"))?;
    let backend = usb::libusb::RusbBackend::new().context("libusb")?;
    let mut dev = backend
        .open_device(id)
        .with_context(|| format!("opening {id}"))?;
    let t = Duration::from_secs(5);
    // What a replay presents the device with (a capture started after enumeration lacks it).
    dev.control_in(
        Control::get_descriptor(descriptor_type::DEVICE, 0, 0),
        18,
        t,
    )
    .context("GET_DESCRIPTOR(device)")?;
    dev.control_in(
        Control::get_descriptor(descriptor_type::CONFIGURATION, 0, 0),
        4096,
        t,
    )
    .context("GET_DESCRIPTOR(configuration)")?;
    let pid = dev.product_id();
    let started = Instant::now();
    let cpu0 = cpu_seconds();
    use irecv::mode::Mode;
    let dfu = matches!(
        Mode::from_product_id(pid),
        Ok(Mode::Dfu | Mode::PortDfu | Mode::Wtf)
    );
    let how = if dfu {
        let f = irecv::dfu::run_download(
            &mut dev,
            &data,
            irecv::dfu::Options::for_product_id(pid),
            &mut irecv::dfu::SystemClock,
            &mut |_| {},
        )
        .map_err(|e| anyhow::anyhow!("DFU download: {e}"))?;
        format!("dfu {f:?}")
    } else {
        irecv::recovery::claim_interfaces(&mut dev)
            .map_err(|e| anyhow::anyhow!("claiming the interfaces: {e}"))?;
        let p = irecv::recovery::run_upload_cancellable(
            &mut dev,
            &data,
            irecv::recovery::UploadOptions::default(),
            &irecv::dfu::SystemClock,
            &mut |_| ControlFlow::Continue(()),
        )
        .map_err(|e| anyhow::anyhow!("recovery upload: {e}"))?;
        format!("recovery sent={}", p.sent)
    };
    let took = started.elapsed().as_secs_f64();
    println!(
        "bytes={} transfer_seconds={took:.3} transfer_mbps={:.3} transfer_cpu={:.3} {how}",
        data.len(),
        data.len() as f64 / took.max(1e-9) / 1e6,
        cpu_seconds() - cpu0
    );
    Ok(())
}

// --- a stream through a usbmuxd socket ------------------------------------------------------

fn mux_request(sock: &mut UnixStream, tag: u32, request: usbmux::socket::Request) -> Result<()> {
    let req = usbmux::socket::ClientRequest {
        tag,
        format: usbmux::socket::Format::Plist,
        client: usbmux::socket::ClientInfo::new("vm-guest-tool"),
        request,
    };
    sock.write_all(&req.encode().context("encoding a usbmuxd request")?)?;
    Ok(())
}

fn mux_response(sock: &mut UnixStream) -> Result<usbmux::socket::Response> {
    let mut head = [0u8; usbmux::socket::HEADER_LEN];
    sock.read_exact(&mut head)
        .context("reading a usbmuxd reply")?;
    let header = usbmux::socket::Header::decode(&head)?;
    let len = (header.length as usize)
        .checked_sub(usbmux::socket::HEADER_LEN)
        .context("reply length")?;
    if len > 4 << 20 {
        bail!("usbmuxd reply of {len} bytes");
    }
    let mut payload = vec![0u8; len];
    sock.read_exact(&mut payload)?;
    Ok(usbmux::socket::DaemonResponse::decode(&header, &payload)?.response)
}

fn mux_echo(opts: &Opts) -> Result<()> {
    use usbmux::socket::{Request, Response, ResultCode};
    let socket = opts.get("socket").unwrap_or("/var/run/usbmuxd");
    let udid = opts.need("udid")?;
    let port = opts.number("port")? as u16;
    let total = opts.number("bytes")? as usize;
    let connect = || UnixStream::connect(socket).with_context(|| format!("connecting {socket}"));
    let mut sock = connect()?;
    mux_request(&mut sock, 1, Request::ListDevices)?;
    let device_id = match mux_response(&mut sock)? {
        Response::DeviceList(list) => list
            .iter()
            .find(|d| d.properties.serial_number == udid)
            .map(|d| d.device_id)
            .with_context(|| format!("{udid} is not in the device list"))?,
        other => bail!("ListDevices answered {other:?}"),
    };
    let mut sock = connect()?;
    mux_request(&mut sock, 2, Request::Connect { device_id, port })?;
    match mux_response(&mut sock)? {
        Response::Result(ResultCode::Ok) => {}
        other => bail!("Connect to port {port} answered {other:?}"),
    }
    let data = pattern(total);
    let started = Instant::now();
    let cpu0 = cpu_seconds();
    let mut writer = sock.try_clone()?;
    let sent = std::thread::scope(|s| -> Result<()> {
        let w = s.spawn(|| -> Result<()> {
            for chunk in data.chunks(64 * 1024) {
                writer.write_all(chunk)?;
            }
            Ok(())
        });
        let mut got = 0usize;
        let mut buf = vec![0u8; 256 * 1024];
        while got < total {
            let n = sock.read(&mut buf).context("reading the echo")?;
            if n == 0 {
                bail!("the connection closed after {got} of {total} bytes");
            }
            if data.get(got..got + n) != Some(&buf[..n]) {
                bail!("echoed bytes differ at offset {got}");
            }
            got += n;
        }
        w.join()
            .map_err(|_| anyhow::anyhow!("writer thread panicked"))??;
        Ok(())
    });
    sent?;
    let took = started.elapsed().as_secs_f64();
    println!(
        "bytes={total} stream_seconds={took:.3} stream_mbps={:.3} stream_cpu={:.3}",
        total as f64 / took.max(1e-9) / 1e6,
        cpu_seconds() - cpu0
    );
    Ok(())
}
