//! `lockdown` owns the lockdownd part of the conversation with a phone: the plist
//! request/reply protocol on port 62078 that a host reaches through a usbmux connection
//! (usbmux itself is another crate). It frames messages (4-byte big-endian length + XML or
//! binary plist), types the requests a restore station sends (`QueryType`, `GetValue`,
//! `StartSession`, `StartService`, `EnterRecovery`, ...) and the replies and `Error` strings the
//! phone sends back, for both ends: [`HostCodec`] for restation, [`DeviceCodec`] for the
//! virtual iPhone. The same framing carries restored (the restore ramdisk's daemon) on the same
//! port, so its `QueryType`/`QueryValue`/`StartRestore`/`Reboot` shapes are here too.
//!
//! The codecs are sans-IO (bytes in, messages out); [`Client`] is a thin async driver over any
//! `AsyncRead + AsyncWrite`. Pairing is here too: the `/var/lib/lockdown/<UDID>.plist` record
//! ([`PairRecordFile`]), the keys and certificates a host makes for a phone
//! ([`pairing::generate_pair_record`]), the answer to `Pair` as an operator outcome
//! ([`PairOutcome`]: "tap Trust on the phone" is a retry, not a failure), and the TLS session
//! `StartSession` switches to ([`tls`]: rustls configurations pinned to the record, for both
//! ends; [`Client::start_tls_session`] upgrades the stream in place).
//!
//! ```
//! use lockdown::{DaemonType, DeviceCodec, HostCodec, Reply, Request};
//!
//! // Host asks which daemon is listening.
//! let mut host = HostCodec::new().with_label("restation");
//! let mut wire = Vec::new();
//! host.encode_request(&Request::QueryType, &mut wire)?;
//!
//! // Device side (the virtual iPhone) reads it and answers, one byte at a time for fun.
//! let mut device = DeviceCodec::new();
//! for byte in &wire {
//!     device.receive(std::slice::from_ref(byte));
//! }
//! let envelope = device.poll_request()?.expect("one whole request");
//! assert_eq!(envelope.request, Request::QueryType);
//! let mut back = Vec::new();
//! device.encode_reply(
//!     &Reply::QueryType { daemon: DaemonType::Restored, restore_protocol_version: Some(15) },
//!     &mut back,
//! )?;
//!
//! // Host decodes and checks the echo.
//! host.receive(&back);
//! let reply = lockdown::check_reply("QueryType", host.poll_reply()?.expect("one reply"))?;
//! assert!(matches!(reply, Reply::QueryType { daemon: DaemonType::Restored, .. }));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod client;
mod codec;
mod error;
mod error_kind;
mod fields;
pub mod frame;
pub mod keys;
pub mod pair_record;
pub mod pairing;
mod reply;
mod request;
pub mod tls;

#[doc(hidden)]
pub mod fuzzing;

pub use client::{Client, QueryType, Service, Session, PORT};
pub use codec::{check_reply, DeviceCodec, HostCodec};
pub use error::{CodecError, Error};
pub use error_kind::ErrorKind;
pub use frame::{
    decode_dictionary, decode_dictionary_with, decode_value, decode_value_with, encode_frame,
    encode_frame_into, Format, FrameDecoder, DEFAULT_MAX_FRAME_LEN,
};
pub use pair_record::{PairRecordError, PairRecordFile};
pub use pairing::PairOutcome;
/// Limits on decoded plists (depth, value count, decoded bytes), from the shared
/// [`plist_limits`] decoder every received frame goes through.
pub use plist_limits::Limits;
pub use reply::{DaemonType, Outcome, Reply};
pub use request::{names, Envelope, PairRecord, PairRequest, Request};
