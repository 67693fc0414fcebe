//! The TSS request: what a restore station asks the signing server for, built from the
//! device (ECID, nonces, chip, board, security domain and modes) and one build identity of
//! the staged IPSW (UniqueBuildID and its components' digests).
//!
//! The plist's keys are the ones Apple's clients send: `@HostPlatformInfo`, `@VersionInfo`,
//! `@UUID`, `@ApImg4Ticket`, `ApECID`, `ApNonce`, `SepNonce`, `ApChipID`, `ApBoardID`,
//! `ApSecurityDomain`, `ApProductionMode`, `ApSecurityMode`, `ApSupportsImg4`,
//! `UniqueBuildID`, and one dictionary per component (`{Digest, Trusted, EPRO, ESEC}`).

use plist::{Dictionary, Value};
use sha2::Digest as _;
use thiserror::Error;

/// Largest request body [`Request::from_xml`] reads.
pub const MAX_REQUEST: usize = 4 << 20;

/// `@HostPlatformInfo` sent by default.
pub const HOST_PLATFORM_INFO: &str = "mac";
/// `@VersionInfo` sent by default (the client library version string Apple's server expects).
pub const VERSION_INFO: &str = "libauthinstall-973.40.2";

/// Components never put in an AP ticket request (they have their own requests, or none).
pub const SKIPPED_COMPONENTS: [&str; 4] = [
    "BasebandFirmware",
    "SE,UpdatePayload",
    "BaseSystem",
    "Diags",
];

/// What the device says about itself, as read in DFU/recovery (or from lockdown).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// `ECID`.
    pub ecid: u64,
    /// `ApNonce` (the device's current boot nonce).
    pub ap_nonce: Vec<u8>,
    /// The SEP nonce, if the chip has a SEP (`SepNonce` in the request).
    pub sep_nonce: Option<Vec<u8>>,
    /// `CPID`.
    pub chip_id: u32,
    /// `BDID`.
    pub board_id: u32,
    /// `SDOM` (1 production).
    pub security_domain: u32,
    /// `CPRO`.
    pub production_mode: bool,
    /// `CSEC`.
    pub security_mode: bool,
}

/// One component entry of the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentRequest {
    /// The manifest key, e.g. `iBSS`.
    pub name: String,
    /// `Digest` (empty for a trusted component the manifest gives no digest).
    pub digest: Vec<u8>,
    /// `Trusted`.
    pub trusted: bool,
    /// `EPRO`: production mode the image may run in.
    pub epro: bool,
    /// `ESEC`: security mode the image may run in.
    pub esec: bool,
}

/// A TSS request for an AP ticket (`@ApImg4Ticket`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `@HostPlatformInfo`.
    pub host_platform_info: String,
    /// `@VersionInfo`.
    pub version_info: String,
    /// `@UUID`, upper-case.
    pub uuid: String,
    /// The device.
    pub device: Device,
    /// `UniqueBuildID`.
    pub unique_build_id: Option<Vec<u8>>,
    /// Components, in the manifest's order.
    pub components: Vec<ComponentRequest>,
}

/// A request plist that is not one this crate can read.
#[derive(Debug, Error)]
pub enum RequestError {
    /// Not a plist.
    #[error("request is not a plist: {0}")]
    Plist(#[source] plist::Error),
    /// Larger than [`MAX_REQUEST`].
    #[error("request of {len} bytes exceeds the {MAX_REQUEST}-byte limit")]
    TooLarge {
        /// Its size.
        len: usize,
    },
    /// A key is missing or has the wrong type.
    #[error("request key {key:?}: expected {expected}")]
    Field {
        /// Which key.
        key: String,
        /// What it should be.
        expected: &'static str,
    },
    /// The build identity's chip or board is not the device's.
    #[error(
        "build identity is for CPID {id_chip:#06x} BDID {id_board:#04x}, the device is \
         CPID {dev_chip:#06x} BDID {dev_board:#04x}"
    )]
    WrongDevice {
        /// The identity's ApChipID.
        id_chip: u32,
        /// The identity's ApBoardID.
        id_board: u32,
        /// The device's.
        dev_chip: u32,
        /// The device's.
        dev_board: u32,
    },
}

impl Request {
    /// A request for `device` with no build and no components yet (see
    /// [`Request::add_component`]); [`Request::for_identity`] is the usual way.
    pub fn new(device: Device) -> Request {
        Request {
            host_platform_info: HOST_PLATFORM_INFO.to_owned(),
            version_info: VERSION_INFO.to_owned(),
            uuid: derived_uuid(&device, None),
            device,
            unique_build_id: None,
            components: Vec::new(),
        }
    }

    /// Adds a trusted component with `digest`, its EPRO/ESEC following the device's modes.
    pub fn add_component(&mut self, name: &str, digest: &[u8]) {
        self.components.push(ComponentRequest {
            name: name.to_owned(),
            digest: digest.to_vec(),
            trusted: true,
            epro: self.device.production_mode,
            esec: self.device.security_mode,
        });
    }

    /// The request for `device` and `identity`: every component with a `Digest` (or marked
    /// `Trusted`), except [`SKIPPED_COMPONENTS`], with `EPRO`/`ESEC` set to the device's modes.
    pub fn for_identity(
        device: &Device,
        identity: &ipsw::BuildIdentity,
    ) -> Result<Request, RequestError> {
        if identity.ap_chip_id != device.chip_id || identity.ap_board_id != device.board_id {
            return Err(RequestError::WrongDevice {
                id_chip: identity.ap_chip_id,
                id_board: identity.ap_board_id,
                dev_chip: device.chip_id,
                dev_board: device.board_id,
            });
        }
        let components = identity
            .components
            .iter()
            .filter(|c| !SKIPPED_COMPONENTS.contains(&c.name.as_str()))
            .filter(|c| c.digest.is_some() || c.trusted)
            .map(|c| ComponentRequest {
                name: c.name.clone(),
                digest: c
                    .digest
                    .as_ref()
                    .map(|d| d.as_bytes().to_vec())
                    .unwrap_or_default(),
                trusted: c.trusted,
                epro: device.production_mode,
                esec: device.security_mode,
            })
            .collect();
        Ok(Request {
            host_platform_info: HOST_PLATFORM_INFO.to_owned(),
            version_info: VERSION_INFO.to_owned(),
            uuid: derived_uuid(device, identity.unique_build_id.as_deref()),
            device: device.clone(),
            unique_build_id: identity.unique_build_id.clone(),
            components,
        })
    }

    /// The component called `name`.
    pub fn component(&self, name: &str) -> Option<&ComponentRequest> {
        self.components.iter().find(|c| c.name == name)
    }

    /// The request as a plist dictionary.
    pub fn to_plist(&self) -> Dictionary {
        let d = &self.device;
        let mut p = Dictionary::new();
        p.insert(
            "@HostPlatformInfo".into(),
            self.host_platform_info.clone().into(),
        );
        p.insert("@VersionInfo".into(), self.version_info.clone().into());
        p.insert("@UUID".into(), self.uuid.clone().into());
        p.insert("@ApImg4Ticket".into(), true.into());
        p.insert("ApECID".into(), d.ecid.into());
        p.insert("ApNonce".into(), Value::Data(d.ap_nonce.clone()));
        if let Some(s) = &d.sep_nonce {
            p.insert("SepNonce".into(), Value::Data(s.clone()));
        }
        p.insert("ApChipID".into(), u64::from(d.chip_id).into());
        p.insert("ApBoardID".into(), u64::from(d.board_id).into());
        p.insert(
            "ApSecurityDomain".into(),
            u64::from(d.security_domain).into(),
        );
        p.insert("ApProductionMode".into(), d.production_mode.into());
        p.insert("ApSecurityMode".into(), d.security_mode.into());
        p.insert("ApSupportsImg4".into(), true.into());
        if let Some(u) = &self.unique_build_id {
            p.insert("UniqueBuildID".into(), Value::Data(u.clone()));
        }
        for c in &self.components {
            let mut e = Dictionary::new();
            e.insert("Digest".into(), Value::Data(c.digest.clone()));
            e.insert("Trusted".into(), c.trusted.into());
            e.insert("EPRO".into(), c.epro.into());
            e.insert("ESEC".into(), c.esec.into());
            p.insert(c.name.clone(), Value::Dictionary(e));
        }
        p
    }

    /// The XML body POSTed to the server.
    pub fn to_xml(&self) -> Vec<u8> {
        let mut out = Vec::new();
        // Writing a Dictionary of plain values into a Vec cannot fail.
        let _ = Value::Dictionary(self.to_plist()).to_writer_xml(&mut out);
        out
    }

    /// Reads a request (the stand-in's side).
    pub fn from_xml(body: &[u8]) -> Result<Request, RequestError> {
        if body.len() > MAX_REQUEST {
            return Err(RequestError::TooLarge { len: body.len() });
        }
        let v = Value::from_reader(std::io::Cursor::new(body)).map_err(RequestError::Plist)?;
        let d = v
            .as_dictionary()
            .ok_or_else(|| field("(root)", "dictionary"))?;
        Request::from_plist(d)
    }

    /// Reads a request dictionary. Keys starting with `@` or `Ap`, and `SepNonce`,
    /// `UniqueBuildID`, are the header; every other dictionary-valued key is a component.
    pub fn from_plist(p: &Dictionary) -> Result<Request, RequestError> {
        let device = Device {
            ecid: uint(p, "ApECID")?,
            ap_nonce: data(p, "ApNonce")?,
            sep_nonce: opt_data(p, "SepNonce")?,
            chip_id: uint32(p, "ApChipID")?,
            board_id: uint32(p, "ApBoardID")?,
            security_domain: uint32(p, "ApSecurityDomain")?,
            production_mode: boolean(p, "ApProductionMode")?,
            security_mode: boolean(p, "ApSecurityMode")?,
        };
        let mut components = Vec::new();
        for (k, v) in p {
            let Some(e) = v.as_dictionary() else { continue };
            components.push(ComponentRequest {
                name: k.clone(),
                digest: opt_data(e, "Digest")?.unwrap_or_default(),
                trusted: opt_bool(e, "Trusted")?.unwrap_or(false),
                epro: opt_bool(e, "EPRO")?.unwrap_or(false),
                esec: opt_bool(e, "ESEC")?.unwrap_or(false),
            });
        }
        Ok(Request {
            host_platform_info: string(p, "@HostPlatformInfo")?,
            version_info: string(p, "@VersionInfo")?,
            uuid: string(p, "@UUID")?,
            device,
            unique_build_id: opt_data(p, "UniqueBuildID")?,
            components,
        })
    }
}

/// An upper-case UUID (version 4 layout) derived from the device and build, so one request
/// is reproducible; callers may overwrite [`Request::uuid`].
fn derived_uuid(d: &Device, ubid: Option<&[u8]>) -> String {
    let mut h = sha2::Sha256::new();
    h.update(d.ecid.to_be_bytes());
    h.update(&d.ap_nonce);
    h.update(ubid.unwrap_or_default());
    let mut b = [0u8; 16];
    b.copy_from_slice(h.finalize().get(..16).unwrap_or(&[0; 16]));
    b[6] = (b[6] & 0x0F) | 0x40;
    b[8] = (b[8] & 0x3F) | 0x80;
    let x = hex::encode_upper(b);
    format!(
        "{}-{}-{}-{}-{}",
        x.get(0..8).unwrap_or_default(),
        x.get(8..12).unwrap_or_default(),
        x.get(12..16).unwrap_or_default(),
        x.get(16..20).unwrap_or_default(),
        x.get(20..32).unwrap_or_default()
    )
}

fn field(key: &str, expected: &'static str) -> RequestError {
    RequestError::Field {
        key: key.chars().take(64).collect(),
        expected,
    }
}

fn get<'a>(
    p: &'a Dictionary,
    key: &str,
    expected: &'static str,
) -> Result<&'a Value, RequestError> {
    p.get(key).ok_or_else(|| field(key, expected))
}

fn uint(p: &Dictionary, key: &str) -> Result<u64, RequestError> {
    get(p, key, "integer")?
        .as_unsigned_integer()
        .ok_or_else(|| field(key, "integer"))
}

fn uint32(p: &Dictionary, key: &str) -> Result<u32, RequestError> {
    u32::try_from(uint(p, key)?).map_err(|_| field(key, "32-bit integer"))
}

fn data(p: &Dictionary, key: &str) -> Result<Vec<u8>, RequestError> {
    get(p, key, "data")?
        .as_data()
        .map(<[u8]>::to_vec)
        .ok_or_else(|| field(key, "data"))
}

fn opt_data(p: &Dictionary, key: &str) -> Result<Option<Vec<u8>>, RequestError> {
    match p.get(key) {
        None => Ok(None),
        Some(v) => v
            .as_data()
            .map(|d| Some(d.to_vec()))
            .ok_or_else(|| field(key, "data")),
    }
}

fn boolean(p: &Dictionary, key: &str) -> Result<bool, RequestError> {
    get(p, key, "boolean")?
        .as_boolean()
        .ok_or_else(|| field(key, "boolean"))
}

fn opt_bool(p: &Dictionary, key: &str) -> Result<Option<bool>, RequestError> {
    match p.get(key) {
        None => Ok(None),
        Some(v) => v
            .as_boolean()
            .map(Some)
            .ok_or_else(|| field(key, "boolean")),
    }
}

fn string(p: &Dictionary, key: &str) -> Result<String, RequestError> {
    get(p, key, "string")?
        .as_string()
        .map(str::to_owned)
        .ok_or_else(|| field(key, "string"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn device() -> impl Strategy<Value = Device> {
        (
            any::<u64>(),
            proptest::collection::vec(any::<u8>(), 0..48),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 20)),
            any::<u32>(),
            any::<u32>(),
            0u32..4,
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(
                |(ecid, ap_nonce, sep_nonce, chip_id, board_id, sd, pm, sm)| Device {
                    ecid,
                    ap_nonce,
                    sep_nonce,
                    chip_id,
                    board_id,
                    security_domain: sd,
                    production_mode: pm,
                    security_mode: sm,
                },
            )
    }

    fn component() -> impl Strategy<Value = ComponentRequest> {
        (
            "[A-Z][A-Za-z0-9,]{1,20}",
            proptest::collection::vec(any::<u8>(), 0..48),
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(|(name, digest, trusted, epro, esec)| ComponentRequest {
                name,
                digest,
                trusted,
                epro,
                esec,
            })
    }

    proptest! {
        #[test]
        fn request_roundtrip(
            device in device(),
            ubid in proptest::option::of(proptest::collection::vec(any::<u8>(), 20)),
            comps in proptest::collection::btree_map("[A-Z][A-Za-z0-9,]{1,20}", component(), 0..10),
        ) {
            // Names are unique keys of the plist; the plist keeps insertion order.
            let components: Vec<ComponentRequest> = comps
                .into_iter()
                .map(|(name, c)| ComponentRequest { name, ..c })
                .collect();
            let r = Request {
                host_platform_info: HOST_PLATFORM_INFO.into(),
                version_info: VERSION_INFO.into(),
                uuid: "00000000-0000-4000-8000-000000000000".into(),
                device,
                unique_build_id: ubid,
                components,
            };
            prop_assert_eq!(Request::from_xml(&r.to_xml()).unwrap(), r);
        }
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(matches!(
            Request::from_xml(b"not a plist"),
            Err(RequestError::Plist(_))
        ));
        let empty = br#"<?xml version="1.0"?><plist version="1.0"><dict/></plist>"#;
        assert!(matches!(
            Request::from_xml(empty),
            Err(RequestError::Field { .. })
        ));
    }
}
