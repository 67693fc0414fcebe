//! The TLS session lockdownd starts after `StartSession` answers `EnableSessionSSL`: rustls
//! configurations for both ends, pinned to the pair record instead of a web PKI.
//!
//! - Host ([`client_config`]): presents `HostCertificate` + `HostPrivateKey` as its client
//!   certificate and accepts the phone only if its certificate is byte for byte the record's
//!   `DeviceCertificate` ([`PinnedCertificate`]); no host name is checked (phones have none).
//! - Phone ([`server_config`], for the virtual iPhone): presents the `DeviceCertificate` it was
//!   given at `Pair` with its own device key, speaks TLS 1.2 only (as lockdownd does), and
//!   requires a client certificate of that pairing: the `HostCertificate` (what restation and
//!   pymobiledevice3 present) or the `RootCertificate` (what libimobiledevice presents, with
//!   the root key).
//!
//! Only configuration lives here; the byte pumping is rustls' own sans-IO `Connection`, or
//! tokio-rustls in [`crate::Client::start_tls`].

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, ServerConfig,
    SignatureScheme,
};

use crate::PairRecordFile;

/// Why a TLS configuration could not be built from a pair record.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A certificate field is not PEM (or holds no certificate).
    #[error("`{field}` is not a PEM certificate: {source}")]
    Certificate {
        /// The pair record key.
        field: &'static str,
        /// What the PEM reader said.
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// A private key field is not a PEM RSA/PKCS#8 key.
    #[error("`{field}` is not a PEM private key: {source}")]
    PrivateKey {
        /// The pair record key.
        field: &'static str,
        /// What the PEM reader said.
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// rustls refused the configuration (e.g. the key does not match the certificate).
    #[error("TLS configuration refused: {0}")]
    Config(#[source] rustls::Error),
}

/// The peer's certificate is not the one the pair record pins.
#[derive(Debug, thiserror::Error)]
#[error("{role} certificate ({found} bytes) is not the one in the pair record ({expected} bytes)")]
pub struct NotPinned {
    /// `device` (checked by the host) or `host` (checked by the phone).
    pub role: &'static str,
    /// Length of the (first) pinned certificate (DER).
    pub expected: usize,
    /// Length of the presented certificate (DER).
    pub found: usize,
}

/// The crypto provider both ends use (ring).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads the first certificate of a PEM field.
pub fn certificate_from_pem(
    field: &'static str,
    pem: &[u8],
) -> Result<CertificateDer<'static>, TlsError> {
    CertificateDer::from_pem_slice(pem).map_err(|source| TlsError::Certificate { field, source })
}

/// Reads a PEM private key (`RSA PRIVATE KEY` or `PRIVATE KEY`).
pub fn private_key_from_pem(
    field: &'static str,
    pem: &[u8],
) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|source| TlsError::PrivateKey { field, source })
}

/// The server name given to rustls. Nothing checks it and nothing sends it (an IP address is
/// never sent as SNI, and SNI is off anyway): phones have no name.
pub fn server_name() -> ServerName<'static> {
    ServerName::IpAddress(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST).into())
}

/// The host's TLS configuration for a lockdown session with the phone of `record`.
pub fn client_config(record: &PairRecordFile) -> Result<Arc<ClientConfig>, TlsError> {
    let device = certificate_from_pem("DeviceCertificate", &record.device_certificate)?;
    let host = certificate_from_pem("HostCertificate", &record.host_certificate)?;
    let key = private_key_from_pem("HostPrivateKey", &record.host_private_key)?;
    let provider = provider();
    let verifier = PinnedCertificate::new("device", vec![device], provider.clone());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS12, &rustls::version::TLS13])
        .map_err(TlsError::Config)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_auth_cert(vec![host], key)
        .map_err(TlsError::Config)?;
    config.enable_sni = false;
    Ok(Arc::new(config))
}

/// The phone's TLS configuration: present `device_certificate` (DER) with `device_key`, accept
/// only one of `client_certificates` (DER: the pairing's host and root certificates) as the
/// client. TLS 1.2 only.
pub fn server_config(
    device_certificate: CertificateDer<'static>,
    device_key: PrivateKeyDer<'static>,
    client_certificates: Vec<CertificateDer<'static>>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = provider();
    let verifier = PinnedCertificate::new("host", client_certificates, provider.clone());
    let config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS12])
        .map_err(TlsError::Config)?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_single_cert(vec![device_certificate], device_key)
        .map_err(TlsError::Config)?;
    Ok(Arc::new(config))
}

/// A verifier that accepts only given end-entity certificates (and checks the handshake
/// signatures against the one presented). Used both ways: the host pins the device
/// certificate, the phone pins the pairing's host (or root) certificate.
#[derive(Debug)]
pub struct PinnedCertificate {
    role: &'static str,
    pinned: Vec<CertificateDer<'static>>,
    provider: Arc<CryptoProvider>,
}

impl PinnedCertificate {
    /// Pins `certificates`; `role` names them in errors (`device`, `host`).
    pub fn new(
        role: &'static str,
        certificates: Vec<CertificateDer<'static>>,
        provider: Arc<CryptoProvider>,
    ) -> Self {
        PinnedCertificate {
            role,
            pinned: certificates,
            provider,
        }
    }

    fn check(&self, presented: &CertificateDer<'_>) -> Result<(), rustls::Error> {
        if self.pinned.iter().any(|p| p.as_ref() == presented.as_ref()) {
            return Ok(());
        }
        Err(rustls::Error::InvalidCertificate(CertificateError::Other(
            rustls::OtherError(Arc::new(NotPinned {
                role: self.role,
                expected: self.pinned.first().map_or(0, |p| p.len()),
                found: presented.len(),
            })),
        )))
    }

    fn tls12(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn tls13(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

impl ServerCertVerifier for PinnedCertificate {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.check(end_entity)
            .map(|()| ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.schemes()
    }
}

impl ClientCertVerifier for PinnedCertificate {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.check(end_entity)
            .map(|()| ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.schemes()
    }
}
