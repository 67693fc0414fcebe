//! The client over HTTPS: a TLS front (rustls, a certificate for `localhost` from a CA made
//! here) passes the bytes to the loopback stand-in. Trusting that CA, the ticket comes; with
//! only the public roots, the handshake fails as a transport error, retried and then reported.

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;
use tss::client::{Client, Config};
use tss::error::{TransportError, TssError};
use tss::request::{Device, Request};
use tss::standin::Standin;
use tss::tls::TlsConnector;

struct Ca {
    pem: String,
    server_cert: CertificateDer<'static>,
    server_key: PrivateKeyDer<'static>,
}

fn ca() -> Ca {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "bench signing proxy CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    Ca {
        pem: ca_cert.pem(),
        server_cert: cert.der().clone(),
        server_key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    }
}

/// Accepts TLS on a loopback port and copies each connection to `backend`.
async fn tls_front(ca: &Ca, backend: std::net::SocketAddr) -> u16 {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![ca.server_cert.clone()], ca.server_key.clone_key())
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                if let Ok(mut plain) = tokio::net::TcpStream::connect(backend).await {
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                }
            });
        }
    });
    port
}

fn request() -> Request {
    let mut r = Request::new(Device {
        ecid: 0x0012_3456_789A_BCDE,
        ap_nonce: vec![0x11; 32],
        sep_nonce: Some(vec![0x22; 20]),
        chip_id: 0x8110,
        board_id: 0x0E,
        security_domain: 1,
        production_mode: true,
        security_mode: true,
    });
    r.add_component("iBSS", &[0xAB; 48]);
    r
}

fn config(url: String) -> Config {
    Config {
        url,
        attempt_timeout: Duration::from_secs(5),
        max_attempts: 2,
        retry_delay: Duration::ZERO,
    }
}

#[tokio::test]
async fn a_ticket_over_https_from_a_server_the_shop_trusts() {
    let ca = ca();
    let standin = Standin::start().await.unwrap();
    let port = tls_front(&ca, standin.addr()).await;
    let url = format!("https://localhost:{port}/TSS/controller?action=2");

    let trusting = TlsConnector::with_extra_ca(ca.pem.as_bytes()).unwrap();
    let client = Client::with_connector(config(url.clone()), trusting).unwrap();
    let ticket = client.request(&request()).await.unwrap();
    assert!(!ticket.ap_img4_ticket.is_empty());
    assert_eq!(standin.requests(), 1);

    // The public roots alone do not know this CA: the handshake fails, never a ticket.
    let public = TlsConnector::webpki().unwrap();
    let client = Client::with_connector(config(url), public).unwrap();
    match client.request(&request()).await {
        Err(TssError::Transport {
            attempts: 2,
            last: TransportError::Tls { .. },
        }) => {}
        other => panic!("expected a TLS failure after 2 attempts, got {other:?}"),
    }
    assert_eq!(standin.requests(), 1, "nothing reached the server");
    standin.shutdown().await;
}

#[test]
fn a_plain_http_connector_refuses_https_urls_and_bad_ca_files_are_named() {
    let err = Client::new(config("https://localhost:1/TSS".into())).unwrap_err();
    assert!(err.to_string().contains("TLS connector"), "{err}");
    let err = TlsConnector::with_only_ca(b"not a certificate").unwrap_err();
    assert!(err.to_string().contains("no certificate"), "{err}");
}
