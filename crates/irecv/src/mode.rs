//! Which mode a phone is in, from the USB product id it enumerates with.
//!
//! Apple devices all use vendor id [`APPLE_VENDOR_ID`] (0x05AC); the product id says the mode.
//! Normal iOS and the restore ramdisk share one product id range (only lockdown's `QueryType`
//! tells them apart), so [`Mode::Normal`] means "usbmux is there: normal or restore".
//!
//! | product id      | [`Mode`]                    |
//! |-----------------|-----------------------------|
//! | 0x1290–0x12AF   | [`Mode::Normal`] (or restore ramdisk, same ids) |
//! | 0x1901–0x1904   | [`Mode::Restore`] (Apple-silicon restore, usbmux) |
//! | 0x1905          | [`Mode::RestoreOrMacDfu`]: Apple-silicon restore, but Apple-silicon Macs use it too |
//! | 0x1280–0x1283   | [`Mode::Recovery`] (iBoot), keeping which of the four |
//! | 0x1227          | [`Mode::Dfu`] (SecureROM)   |
//! | 0x1222          | [`Mode::Wtf`] (very old devices) |
//! | 0xF014          | [`Mode::PortDfu`]           |
//! | 0x1881          | [`Mode::Kis`]               |
//!
//! Anything else from Apple (the T2 bridge at 0x8600, keyboards, displays, Macs) is
//! [`NotAPhone`]; anything from another vendor is `None`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// USB vendor id of every Apple device.
pub const APPLE_VENDOR_ID: u16 = 0x05AC;

/// USB product id of the T2 bridge chip inside Intel Macs.
pub const T2_PRODUCT_ID: u16 = 0x8600;

/// The mode a phone (iPhone, iPad, iPod, Watch, Apple TV...) is in, as its USB product id says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Product ids 0x1290–0x12AF: usbmux is there. Normal iOS, or the restore ramdisk, which
    /// enumerates with the same ids; lockdown `QueryType` tells them apart.
    Normal,
    /// Product ids 0x1901–0x1904: Apple-silicon restore mode (usbmux).
    Restore,
    /// Product id 0x1905: Apple-silicon restore mode, but Apple-silicon Macs also show this id in
    /// DFU-adjacent states. Confirm with usbmux/lockdown before treating it as a phone.
    RestoreOrMacDfu,
    /// Product ids 0x1280–0x1283: iBoot recovery mode.
    Recovery(RecoveryId),
    /// Product id 0x1227: SecureROM DFU mode.
    Dfu,
    /// Product id 0x1222: WTF mode (DFU-like; very old devices).
    Wtf,
    /// Product id 0xF014: Port DFU (small-packet DFU).
    PortDfu,
    /// Product id 0x1881: KIS.
    Kis,
}

/// Which of the four recovery-mode product ids (0x1280–0x1283) the device used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RecoveryId {
    /// 0x1280
    #[serde(rename = "0x1280")]
    P1280,
    /// 0x1281 (what current iBoot uses)
    #[serde(rename = "0x1281")]
    P1281,
    /// 0x1282
    #[serde(rename = "0x1282")]
    P1282,
    /// 0x1283
    #[serde(rename = "0x1283")]
    P1283,
}

impl RecoveryId {
    /// The USB product id.
    pub const fn product_id(self) -> u16 {
        match self {
            Self::P1280 => 0x1280,
            Self::P1281 => 0x1281,
            Self::P1282 => 0x1282,
            Self::P1283 => 0x1283,
        }
    }
}

/// An Apple USB device that is not a phone in any mode restation drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum NotAPhone {
    /// The T2 bridge chip of an Intel Mac (0x8600).
    #[error("Apple T2 bridge (product id {T2_PRODUCT_ID:#06x}): a Mac, not a phone")]
    T2,
    /// Any other Apple product id (keyboards, displays, Macs, adapters...).
    #[error("Apple product id {product_id:#06x} is not a phone mode")]
    OtherApple {
        /// The product id seen.
        product_id: u16,
    },
}

impl Mode {
    /// The mode for an Apple product id, or why it is not a phone.
    pub const fn from_product_id(product_id: u16) -> Result<Mode, NotAPhone> {
        Ok(match product_id {
            0x1290..=0x12AF => Mode::Normal,
            0x1901..=0x1904 => Mode::Restore,
            0x1905 => Mode::RestoreOrMacDfu,
            0x1280 => Mode::Recovery(RecoveryId::P1280),
            0x1281 => Mode::Recovery(RecoveryId::P1281),
            0x1282 => Mode::Recovery(RecoveryId::P1282),
            0x1283 => Mode::Recovery(RecoveryId::P1283),
            0x1227 => Mode::Dfu,
            0x1222 => Mode::Wtf,
            0xF014 => Mode::PortDfu,
            0x1881 => Mode::Kis,
            T2_PRODUCT_ID => return Err(NotAPhone::T2),
            other => return Err(NotAPhone::OtherApple { product_id: other }),
        })
    }

    /// Short lowercase name, as printed by `Display` and the CLI.
    pub const fn as_str(self) -> &'static str {
        match self {
            Mode::Normal => "normal",
            Mode::Restore => "restore",
            Mode::RestoreOrMacDfu => "restore-or-mac-dfu",
            Mode::Recovery(_) => "recovery",
            Mode::Dfu => "dfu",
            Mode::Wtf => "wtf",
            Mode::PortDfu => "port-dfu",
            Mode::Kis => "kis",
        }
    }

    /// True for the modes whose USB serial string is the iBoot/SecureROM `TAG:value` string
    /// that [`crate::serial::SerialInfo`] parses (recovery, DFU, WTF, Port DFU).
    pub const fn has_iboot_serial(self) -> bool {
        matches!(
            self,
            Mode::Recovery(_) | Mode::Dfu | Mode::Wtf | Mode::PortDfu
        )
    }

    /// True for the modes that talk usbmux (normal, restore).
    pub const fn is_usbmux(self) -> bool {
        matches!(self, Mode::Normal | Mode::Restore | Mode::RestoreOrMacDfu)
    }
}

/// Classify a USB device by vendor and product id.
///
/// `None` for a non-Apple vendor, `Some(Err(_))` for an Apple device that is not a phone
/// (T2, other Mac ids), `Some(Ok(mode))` for a phone.
pub const fn classify(vendor_id: u16, product_id: u16) -> Option<Result<Mode, NotAPhone>> {
    if vendor_id != APPLE_VENDOR_ID {
        return None;
    }
    Some(Mode::from_product_id(product_id))
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A product id given as text could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a USB product id (expected 0x1281 or 4737, up to 0xFFFF): {input:?}")]
pub struct ProductIdError {
    /// What was given.
    pub input: String,
}

/// Read a USB product id written as hex with `0x` (`0x1281`) or as decimal (`4737`).
pub fn parse_product_id(text: &str) -> Result<u16, ProductIdError> {
    let t = text.trim();
    let parsed = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(hex) => u16::from_str_radix(hex, 16).ok(),
        None => t.parse::<u16>().ok(),
    };
    parsed.ok_or_else(|| ProductIdError {
        input: text.to_owned(),
    })
}

/// A mode name could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown mode name {input:?} (expected normal, restore, recovery, dfu, wtf, port-dfu, kis)"
)]
pub struct ModeNameError {
    /// What was given.
    pub input: String,
}

impl FromStr for Mode {
    type Err = ModeNameError;

    /// Reads the names [`Mode::as_str`] writes. `recovery` alone means the usual 0x1281.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "normal" => Mode::Normal,
            "restore" => Mode::Restore,
            "restore-or-mac-dfu" => Mode::RestoreOrMacDfu,
            "recovery" => Mode::Recovery(RecoveryId::P1281),
            "dfu" => Mode::Dfu,
            "wtf" => Mode::Wtf,
            "port-dfu" => Mode::PortDfu,
            "kis" => Mode::Kis,
            _ => {
                return Err(ModeNameError {
                    input: s.to_owned(),
                })
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usbmux_range_is_normal() {
        for pid in 0x1290..=0x12AF {
            assert_eq!(Mode::from_product_id(pid), Ok(Mode::Normal), "{pid:#x}");
        }
        assert_ne!(Mode::from_product_id(0x12B0), Ok(Mode::Normal));
        assert_ne!(Mode::from_product_id(0x128F), Ok(Mode::Normal));
    }

    #[test]
    fn apple_silicon_restore_and_the_ambiguous_0x1905() {
        for pid in 0x1901..=0x1904 {
            assert_eq!(Mode::from_product_id(pid), Ok(Mode::Restore));
        }
        assert_eq!(Mode::from_product_id(0x1905), Ok(Mode::RestoreOrMacDfu));
        assert!(Mode::RestoreOrMacDfu.is_usbmux());
        assert!(Mode::from_product_id(0x1900).is_err());
        assert!(Mode::from_product_id(0x1906).is_err());
    }

    #[test]
    fn recovery_keeps_which_of_the_four() {
        let got: Vec<_> = (0x1280..=0x1283)
            .map(|pid| Mode::from_product_id(pid).unwrap())
            .collect();
        assert_eq!(
            got,
            [
                Mode::Recovery(RecoveryId::P1280),
                Mode::Recovery(RecoveryId::P1281),
                Mode::Recovery(RecoveryId::P1282),
                Mode::Recovery(RecoveryId::P1283),
            ]
        );
        for (pid, mode) in (0x1280..=0x1283).zip(got) {
            let Mode::Recovery(id) = mode else {
                panic!("{mode:?}")
            };
            assert_eq!(id.product_id(), pid);
            assert_eq!(mode.to_string(), "recovery");
        }
    }

    #[test]
    fn rom_modes() {
        assert_eq!(Mode::from_product_id(0x1227), Ok(Mode::Dfu));
        assert_eq!(Mode::from_product_id(0x1222), Ok(Mode::Wtf));
        assert_eq!(Mode::from_product_id(0xF014), Ok(Mode::PortDfu));
        assert_eq!(Mode::from_product_id(0x1881), Ok(Mode::Kis));
        assert!(Mode::Dfu.has_iboot_serial());
        assert!(!Mode::Normal.has_iboot_serial());
    }

    #[test]
    fn t2_other_apple_and_other_vendors() {
        assert_eq!(classify(0x05AC, 0x8600), Some(Err(NotAPhone::T2)));
        assert_eq!(
            classify(0x05AC, 0x0250),
            Some(Err(NotAPhone::OtherApple { product_id: 0x0250 }))
        );
        assert_eq!(classify(0x18D1, 0x1281), None);
        assert_eq!(
            classify(0x05AC, 0x1281),
            Some(Ok(Mode::Recovery(RecoveryId::P1281)))
        );
        assert!(NotAPhone::T2.to_string().contains("0x8600"));
    }

    #[test]
    fn display_and_from_str_agree() {
        for mode in [
            Mode::Normal,
            Mode::Restore,
            Mode::RestoreOrMacDfu,
            Mode::Recovery(RecoveryId::P1281),
            Mode::Dfu,
            Mode::Wtf,
            Mode::PortDfu,
            Mode::Kis,
        ] {
            assert_eq!(mode.to_string().parse::<Mode>(), Ok(mode));
        }
        assert!("banana".parse::<Mode>().is_err());
    }

    #[test]
    fn serde_round_trip() {
        for pid in [
            0x1290u16, 0x1901, 0x1905, 0x1280, 0x1283, 0x1227, 0x1222, 0xF014, 0x1881,
        ] {
            let mode = Mode::from_product_id(pid).unwrap();
            let json = serde_json::to_string(&mode).unwrap();
            let back: Mode = serde_json::from_str(&json).unwrap();
            assert_eq!(back, mode, "{json}");
        }
        assert_eq!(serde_json::to_string(&Mode::Dfu).unwrap(), "\"dfu\"");
        assert_eq!(
            serde_json::to_string(&Mode::Recovery(RecoveryId::P1282)).unwrap(),
            r#"{"recovery":"0x1282"}"#
        );
    }

    #[test]
    fn product_id_text() {
        assert_eq!(parse_product_id("0x1281"), Ok(0x1281));
        assert_eq!(parse_product_id("0XF014"), Ok(0xF014));
        assert_eq!(parse_product_id(" 4737 "), Ok(0x1281));
        assert!(parse_product_id("0x10000").is_err());
        assert!(parse_product_id("recovery").is_err());
        assert!(parse_product_id("").is_err());
    }
}
