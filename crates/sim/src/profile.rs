//! Who a virtual phone is: its product, chip, board, ECID, serial number, iOS build, nonces,
//! and every string it shows the host in each mode.
//!
//! A [`Profile`] is built from `irecv`'s device table (product type → board config, CPID,
//! BDID) plus a seed: the same product type and seed always give the same ECID, serial number,
//! UDID and nonces, so a test or a demo bench is reproducible. The per-chip facts (SecureROM
//! tag, nonce lengths, whether the UDID has the hyphenated 24-character form, whether the phone
//! re-enumerates in DFU after iBSS) are in [`ChipFacts`], one table.

use std::fmt::Write as _;

use irecv::devices::{self, Family};

use crate::rng::SplitMix64;

/// Product types with a hand-checked profile, one per UDID/serial generation (A8, A11, A15).
pub const PRESETS: [&str; 3] = ["iPhone7,2", "iPhone10,3", "iPhone14,3"];

/// The iBoot serial fields a profile derives from its chip (one row per chip generation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChipFacts {
    /// `CPRV`.
    pub revision: u32,
    /// `IBFL` in DFU (SecureROM).
    pub dfu_flags: u32,
    /// `IBFL` in recovery (iBoot).
    pub recovery_flags: u32,
    /// `SRTG` tag without brackets.
    pub secure_rom_tag: &'static str,
    /// Whether the serial starts with `SDOM:` (A12 and later).
    pub has_sdom: bool,
    /// ApNonce length in bytes (20 up to A9, 32 from A10).
    pub ap_nonce_len: usize,
    /// Whether the chip has a SEP, hence a SepNonce (A7 and later).
    pub has_sep: bool,
    /// UDID as `CCCCCCCC-EEEEEEEEEEEEEEEE` (A12 and later) instead of 40 hex characters.
    pub hyphenated_udid: bool,
    /// After iBSS the phone comes back in DFU (served by iBSS) instead of recovery (A12+).
    pub dfu_after_ibss: bool,
    /// `HardwarePlatform` in lockdown (`t8110`).
    pub platform: &'static str,
    /// CPU architecture lockdown reports.
    pub arch: &'static str,
}

/// The facts for a chip id; unknown chips get the newest generation's shape.
pub fn chip_facts(chip_id: u32) -> ChipFacts {
    let (revision, srtg, platform) = match chip_id {
        0x7000 => (0x11, "iBoot-1992.0.0.1.19", "t7000"),
        0x7001 => (0x11, "iBoot-1991.0.0.2.16", "t7001"),
        0x8000 => (0x20, "iBoot-2234.0.0.3.3", "s8000"),
        0x8003 => (0x01, "iBoot-2234.0.0.2.22", "s8003"),
        0x8010 => (0x11, "iBoot-2696.0.0.1.33", "t8010"),
        0x8015 => (0x11, "iBoot-3332.0.0.1.23", "t8015"),
        0x8020 => (0x11, "iBoot-3865.0.0.4.7", "t8020"),
        0x8030 => (0x11, "iBoot-4479.0.0.100.4", "t8030"),
        0x8101 => (0x11, "iBoot-4703.0.0.100.9", "t8101"),
        0x8110 => (0x11, "iBoot-5540.0.0.400.91", "t8110"),
        0x8120 => (0x11, "iBoot-7195.0.0.300.6", "t8120"),
        0x8130 => (0x11, "iBoot-8104.0.0.201.4", "t8130"),
        c if c < 0x7000 || (0x8900..=0x8999).contains(&c) => (0x11, "iBoot-1145.3", "s5l"),
        _ => (0x11, "iBoot-10151.0.0.0.1", "t8140"),
    };
    let modern = (0x8020..0x8900).contains(&chip_id);
    let a10_or_later = (0x8010..0x8900).contains(&chip_id);
    let image4 = (0x7000..0x8900).contains(&chip_id) || chip_id == 0x8960;
    let has_sep = image4 || chip_id == 0x8960;
    ChipFacts {
        revision,
        dfu_flags: match (a10_or_later, image4) {
            (true, _) => 0x3C,
            (false, true) => 0x1C,
            (false, false) => 0x00,
        },
        recovery_flags: match (a10_or_later, image4) {
            (true, _) => 0x3D,
            (false, true) => 0x1C,
            (false, false) => 0x00,
        },
        secure_rom_tag: srtg,
        has_sdom: modern,
        ap_nonce_len: if a10_or_later { 32 } else { 20 },
        has_sep,
        hyphenated_udid: modern,
        dfu_after_ibss: modern,
        platform,
        arch: if modern { "arm64e" } else { "arm64" },
    }
}

/// The newest iOS a chip runs, as (version, build, iBoot version).
fn ios_for_chip(chip_id: u32) -> (&'static str, &'static str, &'static str) {
    match chip_id {
        0x8960 | 0x7000 | 0x7001 => ("12.5.7", "16H81", "iBoot-4513.260.81"),
        0x8000 | 0x8003 | 0x8010 => ("15.8.3", "19H386", "iBoot-7429.62.1"),
        0x8015 => ("16.7.10", "20H350", "iBoot-8422.141.2"),
        0x8110 => ("17.5.1", "21F90", "iBoot-10151.121.1"),
        c if (0x8020..0x8900).contains(&c) => ("18.1", "22B83", "iBoot-11881.40.1"),
        _ => ("10.3.4", "14G61", "iBoot-3406.60.2"),
    }
}

/// A product type the device table does not have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProfileError {
    /// Not in `irecv::devices`.
    #[error("unknown product type {product_type:?} (not in the device table; e.g. iPhone14,3)")]
    UnknownProductType {
        /// What was asked for.
        product_type: String,
    },
}

/// Everything a virtual phone says about itself. Fields are public so a bench can override
/// them (a custom DeviceName, an older iOS) after [`Profile::for_product_type`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    /// `iPhone14,3`.
    pub product_type: String,
    /// `d64ap`.
    pub board_config: String,
    /// Marketing name (`iPhone 13 Pro Max`).
    pub marketing_name: String,
    /// `CPID`.
    pub chip_id: u32,
    /// `BDID`.
    pub board_id: u32,
    /// `SDOM` (1 on phones).
    pub security_domain: u32,
    /// `CPFM`: production + secure fuses (3).
    pub fuse_mode: u32,
    /// `SCEP`.
    pub security_epoch: u32,
    /// Chip facts (revision, flags, SecureROM tag...).
    pub chip: ChipFacts,
    /// The ECID.
    pub ecid: u64,
    /// Hardware serial number (`SRNM` in recovery, `SerialNumber` in lockdown).
    pub serial_number: String,
    /// IMEI (cellular iPhones).
    pub imei: Option<String>,
    /// Installed iOS version.
    pub product_version: String,
    /// Installed iOS build.
    pub build_version: String,
    /// iBoot version of the installed build.
    pub iboot_version: String,
    /// ApNonce.
    pub ap_nonce: Vec<u8>,
    /// SepNonce.
    pub sep_nonce: Option<Vec<u8>>,
    /// The UDID (USB serial in normal mode).
    pub udid: String,
    /// The user-visible name.
    pub device_name: String,
    /// Wi-Fi MAC address.
    pub wifi_address: String,
    /// USB product id in normal mode (and restore mode, which shares it).
    pub normal_product_id: u16,
    /// USB product id in recovery mode.
    pub recovery_product_id: u16,
    /// Whether lockdownd trusts the host.
    pub trust: Trust,
    /// Whether iBSS boots with a new ApNonce (a host must then read it again and ask for a
    /// new ticket before iBEC, as on phones whose SecureROM and iBoot nonces differ).
    pub nonce_rolls_after_ibss: bool,
    /// How strictly lockdownd insists on a pairing.
    pub pairing: Pairing,
}

/// How strictly lockdownd insists on a pairing (see [`crate::normal`]). Either way, a host that
/// did `Pair` gets what a real phone gives: `StartSession` with its HostID switches to TLS with
/// the certificates of that pairing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Pairing {
    /// Also lets unpaired hosts in: `StartSession` with an unknown HostID starts a plain
    /// session, `ValidatePair` of an unknown host succeeds, `EnterRecovery` needs no session.
    Lenient,
    /// As a real phone (the default): `StartSession`/`ValidatePair` with an unknown HostID →
    /// `InvalidHostID`, and `EnterRecovery` only inside a TLS session (`SessionInactive`
    /// otherwise).
    #[default]
    Required,
}

/// Whether the phone trusts the host it is plugged into (the "Trust this computer?" dialog):
/// what lockdownd answers to `Pair`, `ValidatePair`, and `StartSession` from a host it has no
/// pairing with. The simulated user taps Trust by setting it to [`Trust::Trusted`] (e.g.
/// `hub.with_phone(port, |p| sim::normal::tap_trust(p))`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Trust {
    /// Paired (or a phone that pairs at once): sessions start.
    #[default]
    Trusted,
    /// The dialog is showing and nobody tapped it: `PairingDialogResponsePending`.
    DialogPending,
    /// The user tapped "Don't Trust": `UserDeniedPairing`.
    Denied,
}

/// Which stage answers in DFU: the SecureROM itself, or iBSS (A12+ after the first upload),
/// which does not show `SRTG`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DfuStage {
    /// SecureROM DFU (PID 0x1227, `SRTG:[iBoot-…]`).
    SecureRom,
    /// iBSS answering DFU requests (PID 0x1227, no `SRTG`).
    Ibss,
    /// Port DFU (PID 0xF014): small blocks, no suffix; the SecureROM answers.
    Port,
}

impl Profile {
    /// A profile for a product type from the device table, deterministic in `seed`.
    ///
    /// ```
    /// let p = sim::profile::Profile::for_product_type("iPhone14,3", 1)?;
    /// assert_eq!((p.chip_id, p.board_id, p.board_config.as_str()), (0x8110, 0x0E, "d64ap"));
    /// assert_eq!(p.udid.len(), 25);
    /// assert_eq!(p, sim::profile::Profile::for_product_type("iphone14,3", 1)?);
    /// # Ok::<(), sim::profile::ProfileError>(())
    /// ```
    pub fn for_product_type(product_type: &str, seed: u64) -> Result<Profile, ProfileError> {
        let row = devices::by_product_type(product_type)
            .next()
            .ok_or_else(|| ProfileError::UnknownProductType {
                product_type: product_type.chars().take(64).collect(),
            })?;
        Ok(Self::from_device(row, seed))
    }

    /// One profile per [`PRESETS`] product type, all from `seed`.
    pub fn presets(seed: u64) -> Vec<Profile> {
        PRESETS
            .iter()
            .filter_map(|pt| Self::for_product_type(pt, seed).ok())
            .collect()
    }

    /// A profile for one row of the device table.
    pub fn from_device(row: &devices::Device, seed: u64) -> Profile {
        let chip = chip_facts(row.chip_id);
        let mut rng = SplitMix64::derive(seed, &format!("profile/{}", row.board_config));
        let ecid = (rng.next_u64() & 0x000F_FFFF_FFFF_FFFF) | 0x0000_1000_0000_0000;
        const SERIAL_CHARS: &[u8] = b"0123456789ABCDEFGHJKLMNPQRSTUVWXYZ";
        let serial_len = if (0x8110..0x8900).contains(&row.chip_id) {
            10
        } else {
            12
        };
        let serial_number: String = (0..serial_len)
            .map(|_| {
                let i = rng.below(SERIAL_CHARS.len() as u64) as usize;
                char::from(SERIAL_CHARS.get(i).copied().unwrap_or(b'X'))
            })
            .collect();
        let udid = if chip.hyphenated_udid {
            format!("{:08X}-{:016X}", row.chip_id, ecid)
        } else {
            hex_lower(&rng.bytes(20))
        };
        let ap_nonce = rng.bytes(chip.ap_nonce_len);
        let sep_nonce = chip.has_sep.then(|| rng.bytes(20));
        let family = row.family();
        let imei = (family == Family::IPhone).then(|| imei(&mut rng));
        let mac = rng.bytes(6);
        let wifi_address = mac
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":");
        let (version, build, iboot) = ios_for_chip(row.chip_id);
        let device_class = device_class(family);
        Profile {
            product_type: row.product_type.to_string(),
            board_config: row.board_config.to_string(),
            marketing_name: row.name.to_string(),
            chip_id: row.chip_id,
            board_id: row.board_id,
            security_domain: 1,
            fuse_mode: 3,
            security_epoch: 1,
            chip,
            ecid,
            serial_number,
            imei,
            product_version: version.to_string(),
            build_version: build.to_string(),
            iboot_version: iboot.to_string(),
            ap_nonce,
            sep_nonce,
            udid,
            device_name: device_class.to_string(),
            wifi_address,
            normal_product_id: match family {
                Family::IPad => 0x12AB,
                Family::IPod => 0x12AA,
                _ => 0x12A8,
            },
            recovery_product_id: 0x1281,
            trust: Trust::Trusted,
            nonce_rolls_after_ibss: false,
            pairing: Pairing::Required,
        }
    }

    /// `iPhone`, `iPad`, ... as lockdown's `DeviceClass` (and the normal-mode product string).
    pub fn device_class(&self) -> &'static str {
        devices::by_product_type(&self.product_type)
            .next()
            .map(|d| device_class(d.family()))
            .unwrap_or("iPhone")
    }

    /// `HardwareModel` (`D64AP`).
    pub fn hardware_model(&self) -> String {
        self.board_config.to_ascii_uppercase()
    }

    /// The hex fields every iBoot/SecureROM serial starts with, up to and including `ECID` and
    /// `IBFL`.
    fn serial_head(&self, flags: u32) -> String {
        let mut s = String::new();
        if self.chip.has_sdom {
            let _ = write!(s, "SDOM:{:02X} ", self.security_domain);
        }
        let _ = write!(
            s,
            "CPID:{:04X} CPRV:{:02X} CPFM:{:02X} SCEP:{:02X} BDID:{:02X} ECID:{:016X} IBFL:{:02X}",
            self.chip_id,
            self.chip.revision,
            self.fuse_mode,
            self.security_epoch,
            self.board_id,
            self.ecid,
            flags
        );
        s
    }

    /// `iSerialNumber` in DFU: the SecureROM shows `SRTG:[iBoot-…]`; iBSS serving DFU (A12+
    /// after the first upload) shows no `SRTG`.
    pub fn dfu_serial(&self, stage: DfuStage) -> String {
        let head = self.serial_head(self.chip.dfu_flags);
        match stage {
            DfuStage::SecureRom | DfuStage::Port => {
                format!("{head} SRTG:[{}]", self.chip.secure_rom_tag)
            }
            DfuStage::Ibss => head,
        }
    }

    /// `iSerialNumber` in recovery (iBoot): no `SRTG`, but `SRNM:[serial]` and, on cellular
    /// phones, `IMEI:[…]`.
    pub fn recovery_serial(&self) -> String {
        let mut s = self.serial_head(self.chip.recovery_flags);
        let _ = write!(s, " SRNM:[{}]", self.serial_number);
        if let Some(imei) = &self.imei {
            let _ = write!(s, " IMEI:[{imei}]");
        }
        s
    }

    /// Gives the phone a new ApNonce, derived from the old one (deterministic per phone).
    pub fn roll_ap_nonce(&mut self) {
        use sha2::Digest;
        let len = self.ap_nonce.len();
        let next = sha2::Sha384::digest(&self.ap_nonce);
        self.ap_nonce = next.iter().copied().cycle().take(len).collect();
    }

    /// String descriptor 1 in recovery and DFU: `NONC:… SNON:…` (upper-case hex).
    pub fn nonce_string(&self) -> String {
        let mut s = format!("NONC:{}", hex_upper(&self.ap_nonce));
        if let Some(sep) = &self.sep_nonce {
            let _ = write!(s, " SNON:{}", hex_upper(sep));
        }
        s
    }

    /// `bcdDevice` in normal mode: the iOS major and minor version in BCD (17.5 → 0x1705).
    pub fn normal_bcd_device(&self) -> u16 {
        let mut parts = self.product_version.split('.');
        let bcd = |p: Option<&str>| {
            let n: u16 = p.and_then(|t| t.parse().ok()).unwrap_or(0).min(99);
            ((n / 10) << 4) | (n % 10)
        };
        let major = bcd(parts.next());
        let minor = bcd(parts.next());
        (major << 8) | minor
    }

    /// The values lockdownd answers to `GetValue` with no domain, as lockdown keys.
    pub fn lockdown_values(&self) -> plist::Dictionary {
        use plist::Value;
        let mut d = plist::Dictionary::new();
        let mut put = |k: &str, v: Value| {
            d.insert(k.to_string(), v);
        };
        put("ActivationState", Value::from("Activated"));
        put("BoardId", Value::from(u64::from(self.board_id)));
        put("BuildVersion", Value::from(self.build_version.as_str()));
        put("CPUArchitecture", Value::from(self.chip.arch));
        put("ChipID", Value::from(u64::from(self.chip_id)));
        put("DeviceClass", Value::from(self.device_class()));
        put("DeviceName", Value::from(self.device_name.as_str()));
        put("FirmwareVersion", Value::from(self.iboot_version.as_str()));
        put("HardwareModel", Value::from(self.hardware_model()));
        put("HardwarePlatform", Value::from(self.chip.platform));
        if let Some(imei) = &self.imei {
            put(
                "InternationalMobileEquipmentIdentity",
                Value::from(imei.as_str()),
            );
        }
        put("PasswordProtected", Value::from(false));
        put("ProductName", Value::from("iPhone OS"));
        put("ProductType", Value::from(self.product_type.as_str()));
        put("ProductVersion", Value::from(self.product_version.as_str()));
        put("ProtocolVersion", Value::from("2"));
        put("SerialNumber", Value::from(self.serial_number.as_str()));
        put("TelephonyCapability", Value::from(self.imei.is_some()));
        put("UniqueChipID", Value::from(self.ecid));
        put("UniqueDeviceID", Value::from(self.udid.as_str()));
        put("WiFiAddress", Value::from(self.wifi_address.as_str()));
        d
    }
}

fn device_class(family: Family) -> &'static str {
    match family {
        Family::IPad => "iPad",
        Family::IPod => "iPod",
        Family::AppleTv => "AppleTV",
        Family::Watch => "Watch",
        _ => "iPhone",
    }
}

fn imei(rng: &mut SplitMix64) -> String {
    let mut digits: Vec<u8> = vec![3, 5];
    digits.extend((0..12).map(|_| rng.below(10) as u8));
    // Luhn check digit over the 14 digits.
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            let d = u32::from(d);
            if i % 2 == 0 {
                let x = d * 2;
                if x > 9 {
                    x - 9
                } else {
                    x
                }
            } else {
                d
            }
        })
        .sum();
    digits.push(((10 - sum % 10) % 10) as u8);
    digits.iter().map(|d| char::from(b'0' + d)).collect()
}

pub(crate) fn hex_upper(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use irecv::serial::{Nonces, SerialInfo};

    #[test]
    fn presets_have_the_shape_of_their_generation() {
        assert_eq!(Profile::presets(42).len(), PRESETS.len());
        for pt in PRESETS {
            let p = Profile::for_product_type(pt, 42).unwrap();
            assert_eq!(p.product_type, pt);
            let dfu = SerialInfo::parse(p.dfu_serial(DfuStage::SecureRom)).unwrap();
            assert_eq!(dfu.ecid, Some(p.ecid));
            assert_eq!(dfu.device().map(|d| d.product_type), Some(pt));
            assert_eq!(dfu.srtg.as_deref(), Some(p.chip.secure_rom_tag));
            let rec = SerialInfo::parse(p.recovery_serial()).unwrap();
            assert_eq!(rec.srtg, None, "iBoot shows no SRTG");
            assert_eq!(rec.srnm.as_deref(), Some(p.serial_number.as_str()));
            assert_eq!(rec.ecid, Some(p.ecid));
            let ibss = SerialInfo::parse(p.dfu_serial(DfuStage::Ibss)).unwrap();
            assert_eq!(ibss.srtg, None);
            let n = Nonces::parse(p.nonce_string()).unwrap();
            assert_eq!(n.ap_nonce.as_deref(), Some(&p.ap_nonce[..]));
            assert_eq!(n.sep_nonce, p.sep_nonce);
            assert_eq!(
                p.lockdown_values()
                    .get("UniqueChipID")
                    .and_then(|v| v.as_unsigned_integer()),
                Some(p.ecid)
            );
        }
        let old = Profile::for_product_type("iPhone7,2", 1).unwrap();
        assert_eq!(old.udid.len(), 40);
        assert!(old.udid.bytes().all(|b| b.is_ascii_hexdigit()));
        assert!(!old.dfu_serial(DfuStage::SecureRom).starts_with("SDOM"));
        assert!(!old.chip.dfu_after_ibss);
        assert_eq!(old.ap_nonce.len(), 20);
        let x = Profile::for_product_type("iPhone10,3", 1).unwrap();
        assert_eq!(x.udid.len(), 40);
        assert_eq!(x.ap_nonce.len(), 32);
        assert!(x
            .dfu_serial(DfuStage::SecureRom)
            .contains("SRTG:[iBoot-3332.0.0.1.23]"));
        let new = Profile::for_product_type("iPhone14,3", 1).unwrap();
        assert!(new
            .dfu_serial(DfuStage::SecureRom)
            .starts_with("SDOM:01 CPID:8110"));
        assert_eq!(&new.udid[..9], "00008110-");
        assert_eq!(new.udid.len(), 25);
        assert!(new.chip.dfu_after_ibss);
        assert_eq!(new.serial_number.len(), 10);
        assert_eq!(new.hardware_model(), "D64AP");
        assert_eq!(
            (new.product_version.as_str(), new.build_version.as_str()),
            ("17.5.1", "21F90")
        );
        assert_eq!(new.normal_bcd_device(), 0x1705);
    }

    #[test]
    fn deterministic_in_the_seed_and_distinct_across_seeds() {
        let a = Profile::for_product_type("iPhone14,3", 7).unwrap();
        assert_eq!(a, Profile::for_product_type("iPhone14,3", 7).unwrap());
        let ecids: std::collections::HashSet<u64> = (0..64)
            .map(|s| Profile::for_product_type("iPhone14,3", s).unwrap().ecid)
            .collect();
        assert_eq!(ecids.len(), 64);
        assert!(matches!(
            Profile::for_product_type("iPhone99,9", 0),
            Err(ProfileError::UnknownProductType { .. })
        ));
    }

    #[test]
    fn imei_passes_luhn() {
        let p = Profile::for_product_type("iPhone10,3", 3).unwrap();
        let imei = p.imei.unwrap();
        assert_eq!(imei.len(), 15);
        let sum: u32 = imei
            .bytes()
            .rev()
            .enumerate()
            .map(|(i, b)| {
                let d = u32::from(b - b'0');
                if i % 2 == 1 {
                    let x = d * 2;
                    if x > 9 {
                        x - 9
                    } else {
                        x
                    }
                } else {
                    d
                }
            })
            .sum();
        assert_eq!(sum % 10, 0);
    }
}
