//! `irecv`: the recovery (iBoot) and DFU (SecureROM) side of the conversation with the phone,
//! starting with what the phone says about itself before any command is sent: which mode its
//! USB product id means ([`mode`]), the `TAG:value` serial string iBoot and SecureROM put in
//! `iSerialNumber` ([`serial::SerialInfo`]), the nonce string beside it ([`serial::Nonces`]),
//! and which product a (chip id, board id) pair is ([`devices`]); then what the host says back:
//! iBoot commands, environment and uploads ([`recovery`]) and SecureROM DFU downloads ([`dfu`]),
//! each bounded as a whole by a time [`budget`] and stoppable by the caller.
//! Everything here is sans-IO: bytes and events in, typed values and transfers out; a device's
//! bad bytes give a typed error, never a panic.
//!
//! ```
//! use irecv::{devices, serial::SerialInfo, Mode};
//!
//! // A phone enumerated as 05ac:1227 with this iSerialNumber:
//! assert_eq!(Mode::from_product_id(0x1227), Ok(Mode::Dfu));
//! let info = SerialInfo::parse(
//!     "CPID:8010 CPRV:11 CPFM:03 SCEP:01 BDID:0C ECID:0002213824536326 IBFL:3C SRTG:[iBoot-2696.0.0.1.33]",
//! )?;
//! assert_eq!(info.ecid, Some(0x2213824536326));
//! assert_eq!(info.image4_aware(), Some(true));
//!
//! let device = info.device().expect("A10 board 0x0C is in the table");
//! assert_eq!(device.product_type, "iPhone9,3");
//! assert_eq!(device.board_config, "d101ap");
//! assert_eq!(devices::by_board_config("d101ap"), Some(device));
//! # Ok::<(), irecv::serial::SerialError>(())
//! ```

pub mod budget;
pub mod devices;
pub mod dfu;
pub mod mode;
pub mod recovery;
pub mod serial;

pub use devices::Device;
pub use mode::Mode;
pub use serial::{Nonces, SerialInfo};

/// Entry points for the fuzz targets in `fuzz/` and the corpus replay tests: one function per
/// decoder, running it and checking its invariants. Not API.
#[doc(hidden)]
pub mod fuzzing {
    use crate::serial::{self, Nonces, SerialInfo};

    /// Serial string parser: never panics; an ECID it reads survives formatting and re-parsing;
    /// the canonical rendering of what it read parses back to the same value.
    pub fn serial(data: &[u8]) {
        let Ok(info) = SerialInfo::parse(data) else {
            return;
        };
        if let Some(ecid) = info.ecid {
            let again = SerialInfo::parse(format!("ECID:{ecid:016X}"));
            assert_eq!(again.map(|i| i.ecid), Ok(Some(ecid)));
            let shown = serial::format_ecid(ecid);
            let digits = shown.strip_prefix("0x").unwrap_or_default();
            assert_eq!(u64::from_str_radix(digits, 16), Ok(ecid), "{shown}");
        }
        // The caps hold; what was read renders and parses back the same, as long as the
        // rendering itself fits the cap (U+FFFD and zero padding can make it longer).
        assert!(info.unreadable.len() + info.extra.len() <= serial::MAX_FIELDS);
        let rendered = info.to_string();
        if rendered.len() <= serial::MAX_SERIAL_LENGTH {
            let whole = SerialInfo {
                truncated: false,
                ..info.clone()
            };
            assert_eq!(
                SerialInfo::parse(&rendered).as_ref(),
                Ok(&whole),
                "rendered as {rendered:?}"
            );
        }
        // Derived values must not panic either.
        let _ = (
            info.device(),
            info.production_mode(),
            info.security_mode(),
            info.image4_aware(),
            info.pwned(),
        );
    }

    /// Nonce string parser: never panics; what it reads renders and parses back the same.
    pub fn nonces(data: &[u8]) {
        let Ok(nonces) = Nonces::parse(data) else {
            return;
        };
        assert!(nonces.ap_nonce.is_some() || nonces.sep_nonce.is_some());
        let rendered = nonces.to_string();
        assert_eq!(
            Nonces::parse(&rendered).as_ref(),
            Ok(&nonces),
            "rendered as {rendered:?}"
        );
    }
}
