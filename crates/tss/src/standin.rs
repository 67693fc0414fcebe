//! A loopback TSS stand-in for tests and the demo: an HTTP server on `127.0.0.1:0` that
//! answers TSS requests with a ticket signed by a key it owns (ECDSA P-256 over SHA-256 of
//! the ticket's `SET { MANB }`). The ticket binds what a real one binds: `ECID`, `BNCH` (the
//! ApNonce), `CHIP`, `BORD`, `SDOM`, the modes, and one `DGST` per requested component with a
//! known IM4M tag. It can be told to refuse (STATUS 94 per ECID or per UniqueBuildID, or any
//! status) and to drop the next N connections without answering (to exercise retries).
//!
//! The signing decision is sans-IO ([`Signer::answer`]); the server is a thin hyper loop.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::{Signature, SigningKey};
use sha2::Digest as _;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::der;
use crate::img4::{self, Im4m, ManifestBody, Properties, Value};
use crate::request::{Request, MAX_REQUEST};
use crate::response::{Answer, Ticket};
use crate::verify::PublicKey;

/// The message the stand-in sends with STATUS 94 (Apple's wording).
pub const UNSIGNED_MESSAGE: &str = "This device isn't eligible for the requested build.";

/// Whom the stand-in refuses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// ECIDs answered STATUS 94.
    pub refused_ecids: BTreeSet<u64>,
    /// UniqueBuildIDs answered STATUS 94.
    pub refused_builds: BTreeSet<Vec<u8>>,
    /// Every request answered with this status and message, when set.
    pub refuse_all: Option<(u32, String)>,
}

/// A stable four-letter tag for a component name outside the well-known table.
fn derived_tag(name: &str) -> img4::FourCc {
    use sha2::Digest;
    let h = sha2::Sha256::digest(name.as_bytes());
    let mut tag = [0u8; 4];
    for (t, b) in tag.iter_mut().zip(h.iter()) {
        *t = b'a' + b % 26;
    }
    tag
}

/// The stand-in's signing authority (sans-IO).
#[derive(Clone)]
pub struct Signer {
    key: SigningKey,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field(
                "public_key",
                &hex::encode(self.public_key().to_sec1_bytes()),
            )
            .finish()
    }
}

impl Signer {
    /// A signer with a fresh random key.
    pub fn random() -> Signer {
        Signer {
            key: SigningKey::random(&mut rand_core::OsRng),
        }
    }

    /// A signer whose key is derived from `seed` (reproducible tests and demos).
    pub fn from_seed(seed: &[u8]) -> Signer {
        let mut counter = 0u32;
        loop {
            let mut h = sha2::Sha256::new();
            h.update(b"restation tss stand-in key");
            h.update(seed);
            h.update(counter.to_be_bytes());
            if let Ok(key) = SigningKey::from_slice(&h.finalize()) {
                return Signer { key };
            }
            counter += 1;
        }
    }

    /// The key tickets verify with.
    pub fn public_key(&self) -> PublicKey {
        PublicKey::from(*self.key.verifying_key())
    }

    /// The ticket for `request`.
    pub fn ticket(&self, request: &Request) -> Im4m {
        let d = &request.device;
        let mut manp = Properties::new();
        manp.insert(*b"ECID", Value::Int(d.ecid));
        manp.insert(*b"BNCH", Value::Data(d.ap_nonce.clone()));
        manp.insert(*b"CHIP", Value::Int(u64::from(d.chip_id)));
        manp.insert(*b"BORD", Value::Int(u64::from(d.board_id)));
        manp.insert(*b"SDOM", Value::Int(u64::from(d.security_domain)));
        manp.insert(*b"CPRO", Value::Bool(d.production_mode));
        manp.insert(*b"CSEC", Value::Bool(d.security_mode));
        if let Some(s) = &d.sep_nonce {
            manp.insert(*b"snon", Value::Data(s.clone()));
        }
        if let Some(u) = &request.unique_build_id {
            manp.insert(*b"srvn", Value::Data(u.clone()));
        }
        let mut body = ManifestBody {
            manp,
            ..ManifestBody::default()
        };
        for c in &request.components {
            // Apple's server knows every component's tag; the stand-in knows the well-known
            // ones and gives the rest a tag of their own, so no requested image is left out.
            let tag = img4::tag_for_name(&c.name).unwrap_or_else(|| derived_tag(&c.name));
            if c.digest.is_empty() {
                continue;
            }
            let mut p = Properties::new();
            p.insert(*b"DGST", Value::Data(c.digest.clone()));
            p.insert(*b"EPRO", Value::Bool(c.epro));
            p.insert(*b"ESEC", Value::Bool(c.esec));
            body.images.insert(tag, p);
        }
        self.sign(body)
    }

    /// Signs a manifest body into a ticket.
    pub fn sign(&self, body: ManifestBody) -> Im4m {
        let signed = body.encode();
        let sig: Signature = self.key.sign(&signed);
        let chain = der::element(
            der::SEQUENCE,
            &der::element(der::OCTET_STRING, &self.public_key().to_sec1_bytes()),
        );
        Im4m::new(body, sig.to_der().as_bytes().to_vec(), chain)
    }

    /// The answer to a request body under `policy`.
    pub fn answer(&self, policy: &Policy, body: &[u8]) -> Answer {
        let request = match Request::from_xml(body) {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(error = %e, "stand-in got a malformed request");
                return Answer::Refused {
                    status: 100,
                    message: "Malformed request".into(),
                };
            }
        };
        if let Some((status, message)) = &policy.refuse_all {
            return Answer::Refused {
                status: *status,
                message: message.clone(),
            };
        }
        let refused_build = request
            .unique_build_id
            .as_ref()
            .is_some_and(|u| policy.refused_builds.contains(u));
        if refused_build || policy.refused_ecids.contains(&request.device.ecid) {
            return Answer::Refused {
                status: 94,
                message: UNSIGNED_MESSAGE.into(),
            };
        }
        Answer::Ticket(Ticket::new(self.ticket(&request).encode()))
    }
}

struct Shared {
    signer: Signer,
    policy: Mutex<Policy>,
    drops: AtomicU32,
    requests: AtomicU64,
    dropped: AtomicU64,
}

/// A running stand-in.
pub struct Standin {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for Standin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Standin").field("addr", &self.addr).finish()
    }
}

impl Standin {
    /// Starts a stand-in with a fresh key on `127.0.0.1:0`.
    pub async fn start() -> std::io::Result<Standin> {
        Standin::start_with(Signer::random()).await
    }

    /// Starts a stand-in signing with `signer` on `127.0.0.1:0`.
    pub async fn start_with(signer: Signer) -> std::io::Result<Standin> {
        Standin::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), signer).await
    }

    /// Starts a stand-in signing with `signer` on `addr` (a bench whose phones sit in a VM
    /// reaches it through the VM's address for the host).
    pub async fn start_on(addr: SocketAddr, signer: Signer) -> std::io::Result<Standin> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            signer,
            policy: Mutex::new(Policy::default()),
            drops: AtomicU32::new(0),
            requests: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        });
        let (stop, mut stopped) = oneshot::channel();
        let s = shared.clone();
        let task = tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = &mut stopped => break,
                    a = listener.accept() => a,
                };
                let Ok((stream, _)) = accepted else { continue };
                if s.drops
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok()
                {
                    s.dropped.fetch_add(1, Ordering::SeqCst);
                    drop(stream);
                    continue;
                }
                let s = s.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let s = s.clone();
                        async move { Ok::<_, std::convert::Infallible>(serve(&s, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Ok(Standin {
            addr,
            shared,
            stop: Some(stop),
            task,
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The URL to give a [`crate::client::Client`].
    pub fn url(&self) -> String {
        format!("http://{}/TSS/controller?action=2", self.addr)
    }

    /// The key its tickets verify with.
    pub fn public_key(&self) -> PublicKey {
        self.shared.signer.public_key()
    }

    /// Answer STATUS 94 to requests for `ecid`.
    pub fn refuse_ecid(&self, ecid: u64) {
        self.with_policy(|p| {
            p.refused_ecids.insert(ecid);
        });
    }

    /// Answer STATUS 94 to requests for the build `unique_build_id`.
    pub fn refuse_build(&self, unique_build_id: &[u8]) {
        self.with_policy(|p| {
            p.refused_builds.insert(unique_build_id.to_vec());
        });
    }

    /// Answer every request with `status` and `message` (`None`: sign again).
    pub fn refuse_all(&self, answer: Option<(u32, String)>) {
        self.with_policy(|p| p.refuse_all = answer);
    }

    /// Close the next `n` connections without answering.
    pub fn drop_connections(&self, n: u32) {
        self.shared.drops.store(n, Ordering::SeqCst);
    }

    /// Requests answered so far (signed or refused).
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// Connections dropped so far.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::SeqCst)
    }

    fn with_policy(&self, f: impl FnOnce(&mut Policy)) {
        let mut guard = match self.shared.policy.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut guard);
    }

    /// Stops listening.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for Standin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(
    s: &Shared,
    req: hyper::Request<hyper::body::Incoming>,
) -> hyper::Response<Full<Bytes>> {
    let reply = |status: u16, body: Vec<u8>| {
        let mut r = hyper::Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::OK);
        r
    };
    if req.method() != hyper::Method::POST {
        return reply(405, b"POST only".to_vec());
    }
    let body = match Limited::new(req.into_body(), MAX_REQUEST).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return reply(413, b"request too large".to_vec()),
    };
    s.requests.fetch_add(1, Ordering::SeqCst);
    let policy = match s.policy.lock() {
        Ok(g) => g.clone(),
        Err(poisoned) => poisoned.into_inner().clone(),
    };
    reply(200, s.signer.answer(&policy, &body).encode())
}
