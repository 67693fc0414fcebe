//! Pairing: the keys and certificates a host makes for a phone, and what the phone's answer to
//! `Pair` means for the person at the bench.
//!
//! [`generate_pair_record`] takes the phone's `DevicePublicKey` (from `GetValue`; a PEM
//! `RSA PUBLIC KEY`) and makes, as libimobiledevice and pymobiledevice3 do: an RSA-2048 root key
//! and self-signed CA certificate, an RSA-2048 host key and certificate, and a certificate for
//! the device's key, both signed by the root. X.509 v3, serial 1, empty names, ten years from
//! `now`, SHA-256 with RSA; the CA has `basicConstraints CA:TRUE` (critical); the host and device
//! certificates `CA:FALSE` (critical), key usage digitalSignature + keyEncipherment (critical),
//! and a subject key identifier (SHA-1 of the public key).
//!
//! Randomness and time come in as arguments: no clock is read here.
//!
//! [`PairOutcome`] types the answer to `Pair`/`ValidatePair`. "Trust this computer?" still
//! showing (`PairingDialogResponsePending`) and a locked phone (`PasswordProtected`) are not
//! errors: they are something to tell the operator, then retry.

use std::time::SystemTime;

use plist::Value;
use rand_core::CryptoRngCore;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, IsCa, Issuer, KeyIdMethod, KeyPair,
    KeyUsagePurpose, PublicKeyData, SerialNumber, SignatureAlgorithm, PKCS_RSA_SHA256,
};
use rsa::pkcs1::{DecodeRsaPublicKey, EncodeRsaPrivateKey, EncodeRsaPublicKey, LineEnding};
use rsa::pkcs8::{DecodePublicKey, EncodePrivateKey};
use rsa::{RsaPrivateKey, RsaPublicKey};
use rustls::pki_types::PrivatePkcs8KeyDer;
use sha1::{Digest, Sha1};

use crate::{check_reply, Error, ErrorKind, PairRecordFile, PairRequest, Reply, Request};

/// RSA modulus size of every key made here (and of the phone's key).
pub const KEY_BITS: usize = 2048;

/// Certificates made here are valid this long from `now` (ten years, as the references do).
pub const VALIDITY: std::time::Duration = std::time::Duration::from_secs(60 * 60 * 24 * 365 * 10);

/// `ProtocolVersion` hosts send with `Pair`.
pub const PROTOCOL_VERSION: &str = "2";

/// Why keys or certificates could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PairingError {
    /// `DevicePublicKey` is neither a PEM `RSA PUBLIC KEY` nor a PEM `PUBLIC KEY` holding RSA.
    #[error("DevicePublicKey ({len} bytes) is not a PEM RSA public key")]
    DevicePublicKey {
        /// Length of what came.
        len: usize,
    },
    /// RSA key generation or encoding failed.
    #[error("RSA key {what} failed: {source}")]
    Rsa {
        /// `generation`, `PKCS#1 encoding`, ...
        what: &'static str,
        /// What the rsa crate said.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Building or signing a certificate failed.
    #[error("{certificate} certificate: {source}")]
    Certificate {
        /// `root`, `host` or `device`.
        certificate: &'static str,
        /// What rcgen said.
        #[source]
        source: rcgen::Error,
    },
    /// `now` is outside what an X.509 time can say.
    #[error("time {0:?} cannot be written in a certificate")]
    Time(SystemTime),
}

fn rsa_error(
    what: &'static str,
) -> impl FnOnce(Box<dyn std::error::Error + Send + Sync>) -> PairingError {
    move |source| PairingError::Rsa { what, source }
}

/// Makes a new RSA-2048 private key (slow in unoptimised builds: about a second or more).
pub fn generate_key(rng: &mut impl CryptoRngCore) -> Result<RsaPrivateKey, PairingError> {
    RsaPrivateKey::new(rng, KEY_BITS).map_err(|e| rsa_error("generation")(Box::new(e)))
}

/// A public key as the phone sends it in `DevicePublicKey`: PEM `RSA PUBLIC KEY` (PKCS#1).
pub fn public_key_pem(key: &RsaPublicKey) -> Result<Vec<u8>, PairingError> {
    key.to_pkcs1_pem(LineEnding::LF)
        .map(String::into_bytes)
        .map_err(|e| rsa_error("PKCS#1 PEM encoding")(Box::new(e)))
}

/// A private key as PEM `RSA PRIVATE KEY` (PKCS#1, what libimobiledevice writes).
pub fn private_key_pem(key: &RsaPrivateKey) -> Result<Vec<u8>, PairingError> {
    key.to_pkcs1_pem(LineEnding::LF)
        .map(|pem| pem.as_bytes().to_vec())
        .map_err(|e| rsa_error("PKCS#1 PEM encoding")(Box::new(e)))
}

/// A private key as PKCS#8 DER (what rustls and rcgen take).
pub fn private_key_pkcs8_der(key: &RsaPrivateKey) -> Result<Vec<u8>, PairingError> {
    key.to_pkcs8_der()
        .map(|doc| doc.as_bytes().to_vec())
        .map_err(|e| rsa_error("PKCS#8 encoding")(Box::new(e)))
}

/// Reads a `DevicePublicKey` (PEM `RSA PUBLIC KEY`, or `PUBLIC KEY` holding an RSA key).
pub fn parse_public_key(pem: &[u8]) -> Result<RsaPublicKey, PairingError> {
    let bad = || PairingError::DevicePublicKey { len: pem.len() };
    let text = std::str::from_utf8(pem).map_err(|_| bad())?;
    RsaPublicKey::from_pkcs1_pem(text.trim())
        .or_else(|_| RsaPublicKey::from_public_key_pem(text.trim()))
        .map_err(|_| bad())
}

/// The RSA public key a certificate (DER) was issued for; `None` when the certificate does not
/// parse or holds no RSA key.
pub fn certificate_public_key(certificate_der: &[u8]) -> Option<RsaPublicKey> {
    let der = rustls::pki_types::CertificateDer::from(certificate_der);
    let cert = webpki::EndEntityCert::try_from(&der).ok()?;
    RsaPublicKey::from_public_key_der(cert.subject_public_key_info().as_ref()).ok()
}

/// A fresh `HostID`: an upper-case random (version 4) UUID.
pub fn new_host_id(rng: &mut impl CryptoRngCore) -> String {
    let mut b = [0u8; 16];
    rng.fill_bytes(&mut b);
    b[6] = (b[6] & 0x0F) | 0x40;
    b[8] = (b[8] & 0x3F) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02X}")).collect();
    let part = |r: std::ops::Range<usize>| hex.get(r).unwrap_or_default().to_owned();
    format!(
        "{}-{}-{}-{}-{}",
        part(0..8),
        part(8..12),
        part(12..16),
        part(16..20),
        part(20..32)
    )
}

/// The subject public key of a certificate made for a key we only know publicly.
struct RsaPublic {
    pkcs1_der: Vec<u8>,
}

impl PublicKeyData for RsaPublic {
    fn der_bytes(&self) -> &[u8] {
        &self.pkcs1_der
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        &PKCS_RSA_SHA256
    }
}

fn rcgen_key(key: &RsaPrivateKey) -> Result<KeyPair, PairingError> {
    let der = private_key_pkcs8_der(key)?;
    KeyPair::from_pkcs8_der_and_sign_algo(&PrivatePkcs8KeyDer::from(der), &PKCS_RSA_SHA256).map_err(
        |source| PairingError::Certificate {
            certificate: "signing key",
            source,
        },
    )
}

fn params(
    now: SystemTime,
    ca: bool,
    subject_key: &impl PublicKeyData,
) -> Result<CertificateParams, PairingError> {
    let start = time::OffsetDateTime::from(now);
    let end = now
        .checked_add(VALIDITY)
        .map(time::OffsetDateTime::from)
        .ok_or(PairingError::Time(now))?;
    let mut p = CertificateParams::default();
    p.distinguished_name = DistinguishedName::new();
    p.serial_number = Some(SerialNumber::from_slice(&[1]));
    p.not_before = start;
    p.not_after = end;
    p.key_identifier_method =
        KeyIdMethod::PreSpecified(Sha1::digest(subject_key.der_bytes()).to_vec());
    if ca {
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    } else {
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
    }
    Ok(p)
}

/// Makes a whole pair record for the phone whose `DevicePublicKey` is `device_public_key`:
/// new root and host keys, the three certificates, and the given identities.
pub fn generate_pair_record(
    device_public_key: &[u8],
    host_id: String,
    system_buid: String,
    now: SystemTime,
    rng: &mut impl CryptoRngCore,
) -> Result<PairRecordFile, PairingError> {
    let device = parse_public_key(device_public_key)?;
    let device = RsaPublic {
        pkcs1_der: device
            .to_pkcs1_der()
            .map(|doc| doc.as_bytes().to_vec())
            .map_err(|e| rsa_error("PKCS#1 encoding")(Box::new(e)))?,
    };
    let root_key = generate_key(rng)?;
    let host_key = generate_key(rng)?;
    let root_signer = rcgen_key(&root_key)?;
    let host_public = rcgen_key(&host_key)?;

    let cert_err = |certificate| {
        move |source| PairingError::Certificate {
            certificate,
            source,
        }
    };
    let root_params = params(now, true, &root_signer)?;
    let root_cert = root_params
        .self_signed(&root_signer)
        .map_err(cert_err("root"))?;
    let issuer = Issuer::new(root_params, &root_signer);
    let host_cert = params(now, false, &host_public)?
        .signed_by(&host_public, &issuer)
        .map_err(cert_err("host"))?;
    let device_cert = params(now, false, &device)?
        .signed_by(&device, &issuer)
        .map_err(cert_err("device"))?;

    Ok(PairRecordFile {
        device_certificate: device_cert.pem().into_bytes(),
        host_certificate: host_cert.pem().into_bytes(),
        root_certificate: root_cert.pem().into_bytes(),
        host_private_key: private_key_pem(&host_key)?,
        root_private_key: private_key_pem(&root_key)?,
        host_id,
        system_buid,
        wifi_mac_address: None,
        escrow_bag: None,
        extra: Default::default(),
    })
}

/// The `Pair` request for `record`, shaped as the references send it: the certificates and
/// identities, `ProtocolVersion` 2, and `PairingOptions {ExtendedPairingErrors: true}`.
pub fn pair_request(record: &PairRecordFile) -> Request {
    let mut options = plist::Dictionary::new();
    options.insert("ExtendedPairingErrors".into(), Value::Boolean(true));
    Request::Pair(PairRequest {
        pair_record: Some(record.to_pair_record()),
        protocol_version: Some(PROTOCOL_VERSION.into()),
        pairing_options: Some(options),
    })
}

/// The `ValidatePair` request for `record`.
pub fn validate_pair_request(record: &PairRecordFile) -> Request {
    Request::ValidatePair(PairRequest {
        pair_record: Some(record.to_pair_record()),
        protocol_version: Some(PROTOCOL_VERSION.into()),
        pairing_options: None,
    })
}

/// What the phone said to `Pair` or `ValidatePair`, for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PairOutcome {
    /// Paired (or the pairing is valid). `Pair` replies carry the `EscrowBag` to save in the
    /// record.
    Paired {
        /// `EscrowBag`.
        escrow_bag: Option<Vec<u8>>,
    },
    /// "Trust this computer?" is showing: tap Trust on the phone, then ask again.
    TrustDialogPending,
    /// The phone is locked with a passcode: unlock it, then ask again.
    PasswordProtected,
    /// Someone tapped "Don't Trust": unplug and replug to see the dialog again.
    UserDenied,
}

impl PairOutcome {
    /// Whether asking again (after the operator acted) can succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            PairOutcome::TrustDialogPending | PairOutcome::PasswordProtected
        )
    }

    /// What to tell the technician, when there is something to do at the phone.
    pub fn operator_message(&self) -> Option<&'static str> {
        match self {
            PairOutcome::Paired { .. } => None,
            PairOutcome::TrustDialogPending => Some("tap Trust on the phone"),
            PairOutcome::PasswordProtected => Some("unlock the phone (enter its passcode)"),
            PairOutcome::UserDenied => {
                Some("\"Don't Trust\" was tapped: unplug and replug the phone, then tap Trust")
            }
        }
    }
}

/// Reads the reply to `request` (`Pair` or `ValidatePair`): the operator outcomes become
/// [`PairOutcome`]s, anything else wrong stays an [`Error`].
pub fn pair_outcome(request: &str, reply: Reply) -> Result<PairOutcome, Error> {
    match check_reply(request, reply) {
        Ok(Reply::Generic { fields, .. }) => Ok(PairOutcome::Paired {
            escrow_bag: match fields.get("EscrowBag") {
                Some(Value::Data(bag)) => Some(bag.clone()),
                _ => None,
            },
        }),
        Ok(_) => Ok(PairOutcome::Paired { escrow_bag: None }),
        Err(Error::Device { kind, request }) => match kind {
            ErrorKind::PairingDialogResponsePending => Ok(PairOutcome::TrustDialogPending),
            ErrorKind::PasswordProtected => Ok(PairOutcome::PasswordProtected),
            ErrorKind::UserDeniedPairing => Ok(PairOutcome::UserDenied),
            kind => Err(Error::Device { request, kind }),
        },
        Err(other) => Err(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_id_is_an_upper_case_v4_uuid() {
        let mut rng = rand_core::OsRng;
        let id = new_host_id(&mut rng);
        assert_eq!(id.len(), 36);
        assert_eq!(id.get(14..15), Some("4"));
        assert!(id
            .chars()
            .all(|c| c == '-' || c.is_ascii_digit() || c.is_ascii_uppercase()));
    }

    #[test]
    fn outcomes() {
        let pending = Reply::error("Pair", ErrorKind::PairingDialogResponsePending);
        let outcome = pair_outcome("Pair", pending).unwrap();
        assert_eq!(outcome, PairOutcome::TrustDialogPending);
        assert!(outcome.is_retryable());
        assert_eq!(outcome.operator_message(), Some("tap Trust on the phone"));
        let denied = Reply::error("Pair", ErrorKind::UserDeniedPairing);
        assert!(!pair_outcome("Pair", denied).unwrap().is_retryable());
        let invalid = Reply::error("Pair", ErrorKind::InvalidPairRecord);
        assert!(matches!(
            pair_outcome("Pair", invalid),
            Err(Error::Device {
                kind: ErrorKind::InvalidPairRecord,
                ..
            })
        ));
        let mut fields = plist::Dictionary::new();
        fields.insert("EscrowBag".into(), Value::Data(vec![9; 4]));
        let ok = Reply::Generic {
            request: Some("Pair".into()),
            result: None,
            fields,
        };
        assert_eq!(
            pair_outcome("Pair", ok).unwrap(),
            PairOutcome::Paired {
                escrow_bag: Some(vec![9; 4])
            }
        );
    }

    #[test]
    fn bad_device_keys_are_typed() {
        for bad in [
            &b""[..],
            b"-----BEGIN RSA PUBLIC KEY-----\nAAAA\n",
            &[0xFF, 0xFE],
        ] {
            assert!(matches!(
                parse_public_key(bad),
                Err(PairingError::DevicePublicKey { .. })
            ));
        }
    }
}
