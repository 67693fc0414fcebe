//! HTTPS for the TSS client: [`TlsConnector`] runs rustls over the TCP stream [`Client`]
//! (crate::Client) posts through. Trust comes from the bundled Mozilla roots (`webpki-roots`,
//! no system store needed on a bench PC), plus, for a shop's own signing proxy, a CA given as
//! PEM.

use std::future::Future;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, ServerName};
use rustls::RootCertStore;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::client::{Connector, Endpoint};
use crate::error::TransportError;

/// Why a TLS connector could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// The CA file is not PEM certificates.
    #[error("CA certificates: {0}")]
    Pem(String),
    /// The CA file holds no certificate.
    #[error("the CA file holds no certificate")]
    NoCertificate,
    /// A certificate rustls does not take as a root.
    #[error("CA certificate refused: {0}")]
    Root(#[source] rustls::Error),
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(#[source] rustls::Error),
}

/// `https://` URLs, through rustls.
#[derive(Clone)]
pub struct TlsConnector {
    config: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for TlsConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConnector").finish_non_exhaustive()
    }
}

impl TlsConnector {
    /// Trusting exactly `roots`.
    pub fn with_roots(roots: RootCertStore) -> Result<TlsConnector, TlsSetupError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(TlsSetupError::Config)?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(TlsConnector {
            config: Arc::new(config),
        })
    }

    /// Trusting the Mozilla roots (what Apple's server presents chains to).
    pub fn webpki() -> Result<TlsConnector, TlsSetupError> {
        Self::with_roots(webpki_roots())
    }

    /// Trusting the Mozilla roots and the CA certificates in `pem` (a signing proxy of the
    /// shop's own).
    pub fn with_extra_ca(pem: &[u8]) -> Result<TlsConnector, TlsSetupError> {
        let mut roots = webpki_roots();
        add_pem(&mut roots, pem)?;
        Self::with_roots(roots)
    }

    /// Trusting only the CA certificates in `pem`.
    pub fn with_only_ca(pem: &[u8]) -> Result<TlsConnector, TlsSetupError> {
        let mut roots = RootCertStore::empty();
        add_pem(&mut roots, pem)?;
        Self::with_roots(roots)
    }
}

fn webpki_roots() -> RootCertStore {
    RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    }
}

fn add_pem(roots: &mut RootCertStore, pem: &[u8]) -> Result<(), TlsSetupError> {
    use rustls::pki_types::pem::PemObject;
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsSetupError::Pem(e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsSetupError::NoCertificate);
    }
    for c in certs {
        roots.add(c).map_err(TlsSetupError::Root)?;
    }
    Ok(())
}

impl Connector for TlsConnector {
    type Io = TlsStream<TcpStream>;

    fn supports(&self, scheme: &str) -> bool {
        scheme == "https"
    }

    fn connect(
        &self,
        endpoint: &Endpoint,
    ) -> impl Future<Output = Result<Self::Io, TransportError>> + Send {
        let addr = format!("{}:{}", endpoint.host, endpoint.port);
        let host = endpoint.host.clone();
        let connector = tokio_rustls::TlsConnector::from(Arc::clone(&self.config));
        async move {
            let name = ServerName::try_from(host.clone()).map_err(|e| TransportError::Tls {
                addr: addr.clone(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidInput, e),
            })?;
            let tcp =
                TcpStream::connect(&addr)
                    .await
                    .map_err(|source| TransportError::Connect {
                        addr: addr.clone(),
                        source,
                    })?;
            connector
                .connect(name, tcp)
                .await
                .map_err(|source| TransportError::Tls { addr, source })
        }
    }
}
