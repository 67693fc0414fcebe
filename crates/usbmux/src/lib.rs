//! The usbmux wire layer: everything said over the phone's "Apple USB Multiplexor"
//! interface once the USB driver has claimed it, in normal and restore mode. This crate owns
//! the mux packets on the two bulk pipes (8/16-byte headers, VERSION/SETUP handshake,
//! CONTROL log lines, the TCP-like connections to device ports such as lockdownd's 62078
//! with their windows, ACKs and RSTs), and the usbmuxd client-socket protocol that
//! libimobiledevice tools speak on `/var/run/usbmuxd`. It does no I/O and reads no clock:
//! the USB driver feeds bytes and `Instant`s in, and writes out what it is handed.
//!
//! - [`Link`]: the host side, a sans-IO state machine in the style of `quinn-proto`.
//! - [`device::Device`]: the device side (what the phone does), for simulators and tests.
//! - [`Header`], [`Message`], [`TcpHeader`], [`FrameReader`]: the packet codec.
//! - [`socket`]: the usbmuxd client-socket messages, both directions.
//! - [`needs_zlp`]: when a bulk OUT write must be followed by a zero-length packet.
//!
//! ```
//! use std::time::Instant;
//! use usbmux::{device::{Device, DeviceConfig}, Event, Link};
//!
//! let now = Instant::now();
//! let mut host = Link::new(now);
//! let mut phone = Device::new(DeviceConfig::default(), now);
//! phone.listen(62078);
//!
//! // What the USB driver does: move bytes between the two sides until both are quiet.
//! fn pump(host: &mut Link, phone: &mut Device, now: Instant) {
//!     loop {
//!         let mut moved = false;
//!         while let Some(p) = host.poll_transmit() { phone.handle_input(&p, now).unwrap(); moved = true; }
//!         while let Some(p) = phone.poll_transmit() { host.handle_input(&p, now).unwrap(); moved = true; }
//!         if !moved { break; }
//!     }
//! }
//! pump(&mut host, &mut phone, now);
//! let conn = host.connect(62078, now)?;
//! host.send(conn, b"hello lockdownd")?;
//! pump(&mut host, &mut phone, now);
//!
//! let accepted = std::iter::from_fn(|| phone.poll_event())
//!     .find_map(|e| match e { Event::Accepted { conn, .. } => Some(conn), _ => None })
//!     .unwrap();
//! assert_eq!(phone.read(accepted, 1024)?.unwrap(), &b"hello lockdownd"[..]);
//! assert!(std::iter::from_fn(|| host.poll_event()).any(|e| e == Event::Connected { conn }));
//! # Ok::<(), usbmux::StreamError>(())
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod device;
mod frame;
mod header;
mod link;
mod message;
mod mux;
pub mod socket;

pub use frame::{FrameReader, Packet};
pub use header::{
    Header, HeaderError, HeaderVersion, Protocol, Sequence, MAGIC, MAX_INCOMING_PACKET, MAX_PACKET,
    MAX_TCP_PAYLOAD, V1_LEN, V2_LEN,
};
pub use link::Link;
pub use message::{
    encode_packet, encode_tcp, Control, ControlKind, Message, MessageError, Setup, TcpFlags,
    TcpHeader, Version, SETUP_BYTE, TCP_HEADER_LEN, VERSION_LEN,
};
pub use mux::{
    CloseReason, Config, ConnId, ConnectionError, Discard, Event, LinkError, Stats, StreamError,
};

/// Whether a bulk OUT transfer of `transfer_len` bytes must be followed by a zero-length
/// packet, so the device sees where it ends: true when the length is a non-zero multiple
/// of the endpoint's `wMaxPacketSize` (512 on high speed). A `w_max_packet_size` of 0
/// (a broken descriptor) never asks for one.
///
/// ```
/// assert!(usbmux::needs_zlp(49152, 512));
/// assert!(!usbmux::needs_zlp(49151, 512));
/// assert!(!usbmux::needs_zlp(0, 512));
/// ```
pub fn needs_zlp(transfer_len: usize, w_max_packet_size: u16) -> bool {
    let mps = usize::from(w_max_packet_size);
    mps != 0 && transfer_len != 0 && transfer_len % mps == 0
}

#[doc(hidden)]
pub mod fuzzing;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zlp_rule() {
        assert!(needs_zlp(512, 512));
        assert!(needs_zlp(1024, 512));
        assert!(needs_zlp(64, 64));
        assert!(!needs_zlp(513, 512));
        assert!(!needs_zlp(0, 512));
        assert!(!needs_zlp(512, 0));
    }
}
