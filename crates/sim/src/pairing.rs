//! lockdownd's side of pairing and of the TLS session, for [`crate::normal`].
//!
//! - [`DeviceKey`]: the phone's RSA-2048 key, deterministic in the ECID (so a phone made from the
//!   same profile seed is the same phone) and made once per process per ECID (key generation is
//!   the slow part). `GetValue DevicePublicKey` hands out its public half as PEM
//!   `RSA PUBLIC KEY`.
//! - [`accept_pair`]: what a phone checks in `Pair` and keeps ([`HostPairing`]): the host's
//!   HostID and certificate, and the device certificate the host made, which must hold the
//!   phone's own public key.
//! - [`TlsSession`]: a rustls server connection driven sans-IO (ciphertext in, plaintext out and
//!   the reverse), presenting the pairing's device certificate and requiring its host (or
//!   root) certificate. TLS 1.2 only, as lockdownd.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::sync::{Arc, Mutex, OnceLock};

use lockdown::pairing::{self, PairingError};
use lockdown::{tls, ErrorKind as LockdownError, PairRecord};
use rand_core::SeedableRng;
use rsa::RsaPrivateKey;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::rng::SplitMix64;

/// The phone's key pair.
#[derive(Debug, PartialEq)]
pub struct DeviceKey {
    private: RsaPrivateKey,
    /// `DevicePublicKey`: PEM `RSA PUBLIC KEY`.
    pub public_pem: Vec<u8>,
    pkcs8_der: Vec<u8>,
}

impl DeviceKey {
    /// Makes the key of the phone with `ecid` (deterministic in it).
    pub fn generate(ecid: u64) -> Result<DeviceKey, PairingError> {
        let seed = SplitMix64::derive(ecid, "lockdown/device-key").next_u64();
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(seed);
        let private = pairing::generate_key(&mut rng)?;
        Ok(DeviceKey {
            public_pem: pairing::public_key_pem(&private.to_public_key())?,
            pkcs8_der: pairing::private_key_pkcs8_der(&private)?,
            private,
        })
    }

    /// The key of the phone with `ecid`, made on first use and shared afterwards.
    pub fn for_ecid(ecid: u64) -> Result<Arc<DeviceKey>, PairingError> {
        static CACHE: OnceLock<Mutex<HashMap<u64, Arc<DeviceKey>>>> = OnceLock::new();
        let cache = CACHE.get_or_init(Default::default);
        let mut keys = cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(key) = keys.get(&ecid) {
            return Ok(key.clone());
        }
        let key = Arc::new(DeviceKey::generate(ecid)?);
        keys.insert(ecid, key.clone());
        Ok(key)
    }

    fn private_key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.pkcs8_der.clone()))
    }

    fn holds(&self, certificate_der: &[u8]) -> bool {
        pairing::certificate_public_key(certificate_der)
            .is_some_and(|key| key == self.private.to_public_key())
    }
}

/// What the phone keeps of one paired host.
#[derive(Debug, Clone, PartialEq)]
pub struct HostPairing {
    /// `HostID`.
    pub host_id: String,
    /// `SystemBUID`, when sent.
    pub system_buid: Option<String>,
    /// The host's certificate (DER): a client certificate accepted in TLS.
    pub host_certificate: Vec<u8>,
    /// The certificate the host made for this phone (DER): presented in TLS.
    pub device_certificate: Vec<u8>,
    /// The host's root certificate (DER): the other client certificate accepted in TLS
    /// (libimobiledevice presents its root certificate and key).
    pub root_certificate: Vec<u8>,
    /// The escrow bag handed to this host.
    pub escrow_bag: Vec<u8>,
}

/// Checks the `PairRecord` of a `Pair` request the way lockdownd does: a HostID, the three
/// certificates, and a device certificate for this phone's key.
pub fn accept_pair(
    record: Option<&PairRecord>,
    key: &DeviceKey,
    escrow_bag: Vec<u8>,
) -> Result<HostPairing, LockdownError> {
    let record = record.ok_or(LockdownError::MissingPairRecord)?;
    let invalid = || LockdownError::InvalidPairRecord;
    let host_id = record
        .host_id
        .clone()
        .filter(|id| !id.is_empty())
        .ok_or_else(invalid)?;
    let der = |field: &'static str, pem: Option<&Vec<u8>>| {
        pem.ok_or_else(invalid).and_then(|pem| {
            tls::certificate_from_pem(field, pem)
                .map(|der| der.as_ref().to_vec())
                .map_err(|_| invalid())
        })
    };
    let device_certificate = der("DeviceCertificate", record.device_certificate.as_ref())?;
    let host_certificate = der("HostCertificate", record.host_certificate.as_ref())?;
    let root_certificate = der("RootCertificate", record.root_certificate.as_ref())?;
    if !key.holds(&device_certificate)
        || pairing::certificate_public_key(&host_certificate).is_none()
    {
        return Err(invalid());
    }
    Ok(HostPairing {
        host_id,
        system_buid: record.system_buid.clone(),
        host_certificate,
        device_certificate,
        root_certificate,
        escrow_bag,
    })
}

/// Why the TLS session could not start or went wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsSessionError {
    /// The pairing's certificates do not make a server configuration.
    #[error("lockdownd TLS configuration: {0}")]
    Config(#[from] tls::TlsError),
    /// The TLS conversation failed (bad client certificate, garbage, ...).
    #[error("lockdownd TLS: {0}")]
    Tls(#[from] rustls::Error),
    /// Moving bytes in or out of rustls failed.
    #[error("lockdownd TLS buffers: {0}")]
    Io(#[from] std::io::Error),
}

/// A lockdownd TLS session on one connection, sans-IO.
#[derive(Debug)]
pub struct TlsSession {
    conn: rustls::ServerConnection,
}

impl TlsSession {
    /// A server session for `pairing` with the phone's `key`.
    pub fn new(pairing: &HostPairing, key: &DeviceKey) -> Result<TlsSession, TlsSessionError> {
        let config = tls::server_config(
            CertificateDer::from(pairing.device_certificate.clone()),
            key.private_key_der(),
            vec![
                CertificateDer::from(pairing.host_certificate.clone()),
                CertificateDer::from(pairing.root_certificate.clone()),
            ],
        )?;
        Ok(TlsSession {
            conn: rustls::ServerConnection::new(config)?,
        })
    }

    /// Feeds `ciphertext` from the host; appends decrypted bytes to `plaintext` and whatever
    /// must go back (handshake, alerts) to `wire`. On error, `wire` holds the alert to send.
    pub fn receive(
        &mut self,
        mut ciphertext: &[u8],
        plaintext: &mut Vec<u8>,
        wire: &mut Vec<u8>,
    ) -> Result<(), TlsSessionError> {
        while !ciphertext.is_empty() {
            let n = self.conn.read_tls(&mut ciphertext)?;
            let processed = self.conn.process_new_packets();
            self.drain(wire)?;
            processed?;
            if n == 0 {
                break;
            }
        }
        let mut buf = [0u8; 16 * 1024];
        loop {
            match self.conn.reader().read(&mut buf) {
                Ok(0) => break,
                Ok(n) => plaintext.extend_from_slice(buf.get(..n).unwrap_or_default()),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Encrypts `plaintext` for the host, appending the records to `wire`.
    pub fn send(&mut self, plaintext: &[u8], wire: &mut Vec<u8>) -> Result<(), TlsSessionError> {
        self.conn.writer().write_all(plaintext)?;
        self.drain(wire)
    }

    /// Whether the handshake has finished (the host proved it holds the paired certificate).
    pub fn is_established(&self) -> bool {
        !self.conn.is_handshaking()
    }

    fn drain(&mut self, wire: &mut Vec<u8>) -> Result<(), TlsSessionError> {
        while self.conn.wants_write() {
            self.conn.write_tls(wire)?;
        }
        Ok(())
    }
}
