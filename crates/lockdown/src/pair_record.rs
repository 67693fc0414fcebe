//! The host's pair record: the `/var/lib/lockdown/<UDID>.plist` file that libimobiledevice,
//! usbmuxd (`ReadPairRecord`/`SavePairRecord`) and pymobiledevice3 keep per paired phone.
//!
//! A plist dictionary: the three certificates and two private keys as PEM text in `<data>`
//! (`DeviceCertificate`, `HostCertificate`, `RootCertificate`, `HostPrivateKey`,
//! `RootPrivateKey`), `HostID` (a UUID string the phone knows this host by), `SystemBUID` (the
//! usbmuxd installation's id), and after a successful `Pair` the phone's `EscrowBag` (data) and
//! its `WiFiMACAddress` (string). Other keys are kept verbatim.
//!
//! Reading is bounded: at most [`MAX_PAIR_RECORD_LEN`] bytes, through the hardened plist decoder
//! with small [`Limits`].

use plist::{Dictionary, Value};

use crate::fields::{Builder, Fields};
use crate::frame::decode_dictionary_with;
use crate::{CodecError, Limits, PairRecord};

/// The largest pair record file accepted (real ones are 5–10 KiB).
pub const MAX_PAIR_RECORD_LEN: usize = 256 * 1024;

/// Plist limits for a pair record: a flat dictionary of strings and data.
pub const PAIR_RECORD_LIMITS: Limits = Limits::new()
    .with_max_depth(8)
    .with_max_values(4096)
    .with_max_bytes(4 * MAX_PAIR_RECORD_LEN as u64);

/// Why a pair record file could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PairRecordError {
    /// The file is larger than [`MAX_PAIR_RECORD_LEN`].
    #[error("pair record is {len} bytes, more than the limit of {max} bytes")]
    TooLarge {
        /// File length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Not a plist dictionary, or a key with the wrong plist type, or a required key missing.
    #[error("pair record: {0}")]
    Format(#[from] CodecError),
    /// A required key is present but empty.
    #[error("pair record: `{field}` is empty")]
    Empty {
        /// The key.
        field: &'static str,
    },
    /// Serialising the record failed.
    #[error("cannot write pair record as XML plist: {0}")]
    Encode(#[source] plist::Error),
}

/// One `/var/lib/lockdown/<UDID>.plist`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PairRecordFile {
    /// `DeviceCertificate`: PEM of the certificate the host made for the phone's public key,
    /// signed by the root. The phone presents it in TLS; the host pins it.
    pub device_certificate: Vec<u8>,
    /// `HostCertificate`: PEM, signed by the root; the host's TLS client certificate.
    pub host_certificate: Vec<u8>,
    /// `RootCertificate`: PEM, self-signed CA.
    pub root_certificate: Vec<u8>,
    /// `HostPrivateKey`: PEM (`RSA PRIVATE KEY` or `PRIVATE KEY`).
    pub host_private_key: Vec<u8>,
    /// `RootPrivateKey`: PEM.
    pub root_private_key: Vec<u8>,
    /// `HostID`: the UUID the phone knows this host by (`StartSession`).
    pub host_id: String,
    /// `SystemBUID`: usbmuxd's id of this host installation.
    pub system_buid: String,
    /// `WiFiMACAddress` of the phone, when known.
    pub wifi_mac_address: Option<String>,
    /// `EscrowBag` the phone returned from `Pair`.
    pub escrow_bag: Option<Vec<u8>>,
    /// Any other key, verbatim (e.g. `UDID`).
    pub extra: Dictionary,
}

fn data(f: &mut Fields, field: &'static str) -> Result<Vec<u8>, PairRecordError> {
    let value = f.data(field)?.ok_or_else(|| f.missing(field))?;
    if value.is_empty() {
        return Err(PairRecordError::Empty { field });
    }
    Ok(value)
}

const REQUIRED_DATA: [&str; 5] = [
    "DeviceCertificate",
    "HostCertificate",
    "RootCertificate",
    "HostPrivateKey",
    "RootPrivateKey",
];

impl PairRecordFile {
    const MESSAGE: &'static str = "pair record";

    /// Reads a record from a plist dictionary.
    pub fn from_dictionary(dict: Dictionary) -> Result<Self, PairRecordError> {
        let mut f = Fields::new(dict, Self::MESSAGE);
        let [device, host, root, host_key, root_key] = REQUIRED_DATA;
        let device_certificate = data(&mut f, device)?;
        let host_certificate = data(&mut f, host)?;
        let root_certificate = data(&mut f, root)?;
        let host_private_key = data(&mut f, host_key)?;
        let root_private_key = data(&mut f, root_key)?;
        let host_id = f.required_string("HostID")?;
        if host_id.is_empty() {
            return Err(PairRecordError::Empty { field: "HostID" });
        }
        let system_buid = f.required_string("SystemBUID")?;
        Ok(PairRecordFile {
            device_certificate,
            host_certificate,
            root_certificate,
            host_private_key,
            root_private_key,
            host_id,
            system_buid,
            wifi_mac_address: f.string("WiFiMACAddress")?,
            escrow_bag: f.data("EscrowBag")?,
            extra: f.rest(),
        })
    }

    /// The record as a plist dictionary.
    pub fn to_dictionary(&self) -> Dictionary {
        Builder::default()
            .data(
                "DeviceCertificate",
                Some(self.device_certificate.as_slice()),
            )
            .data("HostCertificate", Some(self.host_certificate.as_slice()))
            .data("RootCertificate", Some(self.root_certificate.as_slice()))
            .data("HostPrivateKey", Some(self.host_private_key.as_slice()))
            .data("RootPrivateKey", Some(self.root_private_key.as_slice()))
            .put("HostID", self.host_id.clone())
            .put("SystemBUID", self.system_buid.clone())
            .opt("WiFiMACAddress", self.wifi_mac_address.clone())
            .data("EscrowBag", self.escrow_bag.as_deref())
            .extend(&self.extra)
            .finish()
    }

    /// Reads a record file (XML or binary plist), bounded in size and shape.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, PairRecordError> {
        if bytes.len() > MAX_PAIR_RECORD_LEN {
            return Err(PairRecordError::TooLarge {
                len: bytes.len(),
                max: MAX_PAIR_RECORD_LEN,
            });
        }
        Self::from_dictionary(decode_dictionary_with(bytes, &PAIR_RECORD_LIMITS)?)
    }

    /// The record file as an XML plist (the format libimobiledevice writes).
    pub fn to_xml(&self) -> Result<Vec<u8>, PairRecordError> {
        let mut out = Vec::new();
        plist::to_writer_xml(&mut out, &Value::Dictionary(self.to_dictionary()))
            .map_err(PairRecordError::Encode)?;
        Ok(out)
    }

    /// The part of the record a host sends in `Pair`/`ValidatePair`: the three certificates,
    /// `HostID` and `SystemBUID` (never the private keys).
    pub fn to_pair_record(&self) -> PairRecord {
        PairRecord {
            device_certificate: Some(self.device_certificate.clone()),
            host_certificate: Some(self.host_certificate.clone()),
            root_certificate: Some(self.root_certificate.clone()),
            host_id: Some(self.host_id.clone()),
            system_buid: Some(self.system_buid.clone()),
            ..PairRecord::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> PairRecordFile {
        PairRecordFile {
            device_certificate: b"-----BEGIN CERTIFICATE-----\nA\n".to_vec(),
            host_certificate: b"-----BEGIN CERTIFICATE-----\nB\n".to_vec(),
            root_certificate: b"-----BEGIN CERTIFICATE-----\nC\n".to_vec(),
            host_private_key: b"-----BEGIN RSA PRIVATE KEY-----\nD\n".to_vec(),
            root_private_key: b"-----BEGIN RSA PRIVATE KEY-----\nE\n".to_vec(),
            host_id: "A1B2C3D4-0000-4000-8000-000000000001".into(),
            system_buid: "B2C3D4E5-0000-4000-8000-000000000002".into(),
            wifi_mac_address: Some("aa:bb:cc:dd:ee:ff".into()),
            escrow_bag: Some(vec![1, 2, 3]),
            extra: Dictionary::new(),
        }
    }

    #[test]
    fn xml_round_trip() {
        let record = sample();
        let back = PairRecordFile::from_bytes(&record.to_xml().unwrap()).unwrap();
        assert_eq!(back, record);
    }

    #[test]
    fn missing_and_empty_and_huge() {
        let mut dict = sample().to_dictionary();
        dict.remove("HostPrivateKey");
        assert!(matches!(
            PairRecordFile::from_dictionary(dict),
            Err(PairRecordError::Format(CodecError::MissingField {
                field: "HostPrivateKey",
                ..
            }))
        ));
        let mut dict = sample().to_dictionary();
        dict.insert("DeviceCertificate".into(), Value::Data(Vec::new()));
        assert!(matches!(
            PairRecordFile::from_dictionary(dict),
            Err(PairRecordError::Empty {
                field: "DeviceCertificate"
            })
        ));
        let mut dict = sample().to_dictionary();
        dict.insert("HostID".into(), Value::Data(vec![1]));
        assert!(matches!(
            PairRecordFile::from_dictionary(dict),
            Err(PairRecordError::Format(CodecError::WrongType {
                field: "HostID",
                ..
            }))
        ));
        let huge = vec![b' '; MAX_PAIR_RECORD_LEN + 1];
        assert!(matches!(
            PairRecordFile::from_bytes(&huge),
            Err(PairRecordError::TooLarge { .. })
        ));
    }
}
