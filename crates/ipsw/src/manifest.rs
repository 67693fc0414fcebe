//! BuildManifest.plist and Restore.plist as types, and the choice of the build identity a
//! restore uses for one device.

use std::fmt;

use plist::{Dictionary, Value};
use serde::Serialize;

use crate::digest::Digest;
use crate::error::Error;

/// Erase (wipe and install) or Update (keep user data).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum RestoreBehavior {
    /// A clean install.
    Erase,
    /// An upgrade that keeps user data.
    Update,
}

impl RestoreBehavior {
    /// The manifest's spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            RestoreBehavior::Erase => "Erase",
            RestoreBehavior::Update => "Update",
        }
    }
}

impl fmt::Display for RestoreBehavior {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for RestoreBehavior {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s.to_ascii_lowercase().as_str() {
            "erase" => Ok(RestoreBehavior::Erase),
            "update" => Ok(RestoreBehavior::Update),
            _ => Err(Error::RestoreBehavior {
                value: s.to_owned(),
            }),
        }
    }
}

/// `BuildIdentities[n].Info`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IdentityInfo {
    /// Board config, e.g. `d64ap`.
    pub device_class: String,
    /// Erase or Update.
    pub restore_behavior: RestoreBehavior,
    /// e.g. `Customer Erase Install (IPSW)`.
    pub variant: String,
    /// e.g. `19E258`.
    pub build_number: Option<String>,
    /// e.g. `SkyE`.
    pub build_train: Option<String>,
    /// Whether the restore talks to the FDR server.
    pub fdr_support: Option<bool>,
    /// Minimum system partition size in MiB.
    pub minimum_system_partition: Option<u64>,
}

/// One entry of a build identity's `Manifest` dictionary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Component {
    /// The manifest key, e.g. `iBSS`, `RestoreRamDisk`, `Rap,RTKitOS`.
    pub name: String,
    /// `Digest`; absent for e.g. BasebandFirmware, SE,UpdatePayload, ftap.
    pub digest: Option<Digest>,
    /// `Info.Path`: the zip member, absent for personalized-only entries.
    pub path: Option<String>,
    /// `Info.IsLoadedByiBoot`.
    pub is_loaded_by_iboot: bool,
    /// `Info.IsLoadedByiBootStage1`.
    pub is_loaded_by_iboot_stage1: bool,
    /// `Info.IsFirmwarePayload`.
    pub is_firmware_payload: bool,
    /// `Info.IsFUDFirmware`.
    pub is_fud_firmware: bool,
    /// `Trusted`.
    pub trusted: bool,
    /// `Info.Personalize`, when present.
    pub personalize: Option<bool>,
    /// `Info.HashMethod`: when present the `Digest` is computed by that method over the
    /// image's content (e.g. a sealed volume), not over the member's bytes.
    pub hash_method: Option<String>,
    /// `Info.Img4PayloadType`, e.g. `rdtr`.
    pub img4_payload_type: Option<String>,
}

impl Component {
    /// True when `Digest` is a plain hash of the zip member named by `Path`.
    pub fn has_member_digest(&self) -> bool {
        self.digest.is_some() && self.path.is_some() && self.hash_method.is_none()
    }
}

/// One `BuildIdentities[n]`: what one board gets for one restore behavior.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BuildIdentity {
    /// `ApChipID`, e.g. 0x8110.
    pub ap_chip_id: u32,
    /// `ApBoardID`, e.g. 0x0E.
    pub ap_board_id: u32,
    /// `ApSecurityDomain`, 1 for production.
    pub ap_security_domain: u32,
    /// `UniqueBuildID`.
    #[serde(serialize_with = "ser_hex_opt")]
    pub unique_build_id: Option<Vec<u8>>,
    /// `Info`.
    pub info: IdentityInfo,
    /// `Manifest`, in the file's order.
    pub components: Vec<Component>,
}

fn ser_hex_opt<S: serde::Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(b) => s.serialize_str(&hex::encode(b)),
        None => s.serialize_none(),
    }
}

impl BuildIdentity {
    /// The component called `name`.
    pub fn component(&self, name: &str) -> Option<&Component> {
        self.components.iter().find(|c| c.name == name)
    }
}

/// BuildManifest.plist.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BuildManifest {
    /// e.g. `15.4.1`.
    pub product_version: String,
    /// e.g. `19E258`.
    pub product_build_version: String,
    /// e.g. `["iPhone14,3"]`.
    pub supported_product_types: Vec<String>,
    /// `ManifestVersion`.
    pub manifest_version: Option<u64>,
    /// `BuildIdentities`.
    pub identities: Vec<BuildIdentity>,
}

/// Which device a restore is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceMatch {
    /// By ApChipID and ApBoardID, as the device reports in DFU/recovery.
    Chip {
        /// CPID.
        cpid: u32,
        /// BDID.
        bdid: u32,
    },
    /// By `Info.DeviceClass` (board config, e.g. `d64ap`), case-insensitive.
    DeviceClass(String),
}

impl fmt::Display for DeviceMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceMatch::Chip { cpid, bdid } => write!(f, "CPID 0x{cpid:04X} BDID 0x{bdid:02X}"),
            DeviceMatch::DeviceClass(c) => write!(f, "device class {c}"),
        }
    }
}

impl DeviceMatch {
    /// Does this identity fit the device?
    pub fn fits(&self, id: &BuildIdentity) -> bool {
        match self {
            DeviceMatch::Chip { cpid, bdid } => id.ap_chip_id == *cpid && id.ap_board_id == *bdid,
            DeviceMatch::DeviceClass(c) => id.info.device_class.eq_ignore_ascii_case(c),
        }
    }
}

impl BuildManifest {
    /// Parse BuildManifest.plist (XML or binary).
    pub fn from_bytes(bytes: &[u8]) -> Result<BuildManifest, Error> {
        let value = Value::from_reader(std::io::Cursor::new(bytes)).map_err(|e| Error::Plist {
            file: "BuildManifest.plist",
            source: e,
        })?;
        BuildManifest::from_value(&value)
    }

    /// Build from an already parsed plist value.
    pub fn from_value(value: &Value) -> Result<BuildManifest, Error> {
        let root = value.as_dictionary().ok_or(Error::Field {
            file: "BuildManifest.plist",
            key: "(root)".into(),
            expected: "dictionary",
        })?;
        const F: &str = "BuildManifest.plist";
        let identities = req(root, F, "BuildIdentities")?
            .as_array()
            .ok_or_else(|| field(F, "BuildIdentities", "array"))?
            .iter()
            .enumerate()
            .map(|(i, v)| parse_identity(i, v))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(BuildManifest {
            product_version: req_str(root, F, "ProductVersion")?,
            product_build_version: req_str(root, F, "ProductBuildVersion")?,
            supported_product_types: str_array(root, F, "SupportedProductTypes")?,
            manifest_version: root
                .get("ManifestVersion")
                .and_then(Value::as_unsigned_integer),
            identities,
        })
    }

    /// Identities for the device, in file order.
    pub fn identities_for<'a>(
        &'a self,
        device: &'a DeviceMatch,
    ) -> impl Iterator<Item = &'a BuildIdentity> + 'a {
        self.identities.iter().filter(move |id| device.fits(id))
    }

    /// The identity a restore of `device` with `behavior` uses: the device first, then the
    /// behavior; among several matches a `Customer` variant wins, then file order.
    pub fn select(
        &self,
        device: &DeviceMatch,
        behavior: RestoreBehavior,
    ) -> Result<&BuildIdentity, Error> {
        let for_device: Vec<&BuildIdentity> = self
            .identities
            .iter()
            .filter(|id| device.fits(id))
            .collect();
        if for_device.is_empty() {
            let mut available: Vec<String> = self
                .identities
                .iter()
                .map(|id| {
                    format!(
                        "0x{:04X}/0x{:02X} {}",
                        id.ap_chip_id, id.ap_board_id, id.info.device_class
                    )
                })
                .collect();
            available.dedup();
            return Err(Error::NoIdentityForDevice {
                device: device.to_string(),
                build: self.product_build_version.clone(),
                available,
            });
        }
        let matching: Vec<&BuildIdentity> = for_device
            .iter()
            .copied()
            .filter(|id| id.info.restore_behavior == behavior)
            .collect();
        matching
            .iter()
            .copied()
            .find(|id| id.info.variant.contains("Customer"))
            .or_else(|| matching.first().copied())
            .ok_or_else(|| {
                let mut available: Vec<RestoreBehavior> = for_device
                    .iter()
                    .map(|id| id.info.restore_behavior)
                    .collect();
                available.dedup();
                Error::NoIdentityForBehavior {
                    device: device.to_string(),
                    behavior,
                    available,
                }
            })
    }
}

/// One `DeviceMap` entry of Restore.plist.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceMapEntry {
    /// ApBoardID.
    pub bdid: u32,
    /// ApChipID.
    pub cpid: u32,
    /// e.g. `n61ap`.
    pub board_config: String,
    /// e.g. `t7000`.
    pub platform: Option<String>,
}

/// Restore.plist (the parts a restore station uses).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RestoreInfo {
    /// e.g. `8.4.1`.
    pub product_version: String,
    /// e.g. `12H321`.
    pub product_build_version: String,
    /// e.g. `["iPhone7,2"]`.
    pub supported_product_types: Vec<String>,
    /// `DeviceMap`.
    pub device_map: Vec<DeviceMapEntry>,
}

impl RestoreInfo {
    /// Parse Restore.plist.
    pub fn from_bytes(bytes: &[u8]) -> Result<RestoreInfo, Error> {
        const F: &str = "Restore.plist";
        let value = Value::from_reader(std::io::Cursor::new(bytes))
            .map_err(|e| Error::Plist { file: F, source: e })?;
        let root = value
            .as_dictionary()
            .ok_or_else(|| field(F, "(root)", "dictionary"))?;
        let device_map = match root.get("DeviceMap") {
            None => Vec::new(),
            Some(v) => v
                .as_array()
                .ok_or_else(|| field(F, "DeviceMap", "array"))?
                .iter()
                .map(|e| {
                    let d = e
                        .as_dictionary()
                        .ok_or_else(|| field(F, "DeviceMap[]", "dictionary"))?;
                    Ok(DeviceMapEntry {
                        bdid: req_u32(d, F, "BDID")?,
                        cpid: req_u32(d, F, "CPID")?,
                        board_config: req_str(d, F, "BoardConfig")?,
                        platform: opt_str(d, "Platform"),
                    })
                })
                .collect::<Result<Vec<_>, Error>>()?,
        };
        Ok(RestoreInfo {
            product_version: req_str(root, F, "ProductVersion")?,
            product_build_version: req_str(root, F, "ProductBuildVersion")?,
            supported_product_types: str_array(root, F, "SupportedProductTypes")?,
            device_map,
        })
    }
}

fn field(file: &'static str, key: &str, expected: &'static str) -> Error {
    Error::Field {
        file,
        key: key.to_owned(),
        expected,
    }
}

fn req<'a>(d: &'a Dictionary, file: &'static str, key: &str) -> Result<&'a Value, Error> {
    d.get(key).ok_or_else(|| Error::MissingField {
        file,
        key: key.to_owned(),
    })
}

fn req_str(d: &Dictionary, file: &'static str, key: &str) -> Result<String, Error> {
    req(d, file, key)?
        .as_string()
        .map(str::to_owned)
        .ok_or_else(|| field(file, key, "string"))
}

fn opt_str(d: &Dictionary, key: &str) -> Option<String> {
    d.get(key).and_then(Value::as_string).map(str::to_owned)
}

fn opt_bool(d: &Dictionary, key: &str) -> Option<bool> {
    d.get(key).and_then(Value::as_boolean)
}

fn str_array(d: &Dictionary, file: &'static str, key: &str) -> Result<Vec<String>, Error> {
    match d.get(key) {
        None => Ok(Vec::new()),
        Some(v) => v
            .as_array()
            .ok_or_else(|| field(file, key, "array of strings"))?
            .iter()
            .map(|s| {
                s.as_string()
                    .map(str::to_owned)
                    .ok_or_else(|| field(file, key, "array of strings"))
            })
            .collect(),
    }
}

/// An integer given either as a plist integer or as a hex string (`"0x8110"`).
fn req_u32(d: &Dictionary, file: &'static str, key: &str) -> Result<u32, Error> {
    let v = req(d, file, key)?;
    let n = if let Some(n) = v.as_unsigned_integer() {
        Some(n)
    } else if let Some(s) = v.as_string() {
        parse_int(s)
    } else {
        None
    };
    n.and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| Error::Integer {
            file,
            key: key.to_owned(),
            value: format!("{v:?}"),
        })
}

/// `0x8110`, `0X0e` or decimal `32784`.
pub fn parse_int(s: &str) -> Option<u64> {
    let s = s.trim();
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

fn parse_identity(index: usize, v: &Value) -> Result<BuildIdentity, Error> {
    const F: &str = "BuildManifest.plist";
    let d = v
        .as_dictionary()
        .ok_or_else(|| field(F, &format!("BuildIdentities[{index}]"), "dictionary"))?;
    let info_d = req(d, F, "Info")?
        .as_dictionary()
        .ok_or_else(|| field(F, "Info", "dictionary"))?;
    let info = IdentityInfo {
        device_class: req_str(info_d, F, "DeviceClass")?,
        restore_behavior: req_str(info_d, F, "RestoreBehavior")?.parse()?,
        variant: opt_str(info_d, "Variant").unwrap_or_default(),
        build_number: opt_str(info_d, "BuildNumber"),
        build_train: opt_str(info_d, "BuildTrain"),
        fdr_support: opt_bool(info_d, "FDRSupport"),
        minimum_system_partition: info_d
            .get("MinimumSystemPartition")
            .and_then(Value::as_unsigned_integer),
    };
    let manifest = req(d, F, "Manifest")?
        .as_dictionary()
        .ok_or_else(|| field(F, "Manifest", "dictionary"))?;
    let components = manifest
        .iter()
        .map(|(name, c)| parse_component(name, c))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(BuildIdentity {
        ap_chip_id: req_u32(d, F, "ApChipID")?,
        ap_board_id: req_u32(d, F, "ApBoardID")?,
        ap_security_domain: req_u32(d, F, "ApSecurityDomain")?,
        unique_build_id: d
            .get("UniqueBuildID")
            .and_then(Value::as_data)
            .map(<[u8]>::to_vec),
        info,
        components,
    })
}

fn parse_component(name: &str, v: &Value) -> Result<Component, Error> {
    const F: &str = "BuildManifest.plist";
    let d = v
        .as_dictionary()
        .ok_or_else(|| field(F, &format!("Manifest.{name}"), "dictionary"))?;
    let digest = match d.get("Digest") {
        None => None,
        Some(v) => {
            let bytes = v
                .as_data()
                .ok_or_else(|| field(F, &format!("Manifest.{name}.Digest"), "data"))?;
            Some(
                Digest::from_bytes(bytes).map_err(|_| Error::ComponentDigestLength {
                    component: name.to_owned(),
                    len: bytes.len(),
                })?,
            )
        }
    };
    let empty = Dictionary::new();
    let info = match d.get("Info") {
        None => &empty,
        Some(v) => v
            .as_dictionary()
            .ok_or_else(|| field(F, &format!("Manifest.{name}.Info"), "dictionary"))?,
    };
    Ok(Component {
        name: name.to_owned(),
        digest,
        path: opt_str(info, "Path"),
        is_loaded_by_iboot: opt_bool(info, "IsLoadedByiBoot").unwrap_or(false),
        is_loaded_by_iboot_stage1: opt_bool(info, "IsLoadedByiBootStage1").unwrap_or(false),
        is_firmware_payload: opt_bool(info, "IsFirmwarePayload").unwrap_or(false),
        is_fud_firmware: opt_bool(info, "IsFUDFirmware").unwrap_or(false),
        trusted: opt_bool(d, "Trusted").unwrap_or(false),
        personalize: opt_bool(info, "Personalize"),
        hash_method: opt_str(info, "HashMethod"),
        img4_payload_type: opt_str(info, "Img4PayloadType"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ints() {
        assert_eq!(parse_int("0x8110"), Some(0x8110));
        assert_eq!(parse_int("0X0e"), Some(14));
        assert_eq!(parse_int("12"), Some(12));
        assert_eq!(parse_int("0xzz"), None);
    }

    #[test]
    fn behavior_parse() {
        assert_eq!(
            "erase".parse::<RestoreBehavior>().unwrap(),
            RestoreBehavior::Erase
        );
        assert_eq!(
            "Update".parse::<RestoreBehavior>().unwrap(),
            RestoreBehavior::Update
        );
        assert!("Research".parse::<RestoreBehavior>().is_err());
    }

    #[test]
    fn not_a_plist_is_an_error() {
        assert!(matches!(
            BuildManifest::from_bytes(b"PK\x03\x04garbage"),
            Err(Error::Plist { .. } | Error::Field { .. })
        ));
        let empty = br#"<?xml version="1.0"?><plist version="1.0"><dict/></plist>"#;
        assert!(matches!(
            BuildManifest::from_bytes(empty),
            Err(Error::MissingField { .. })
        ));
    }
}
