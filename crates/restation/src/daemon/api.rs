//! The local API: JSON over HTTP/1.1 on a unix socket (mode 0660: the owner and the bench
//! group).
//!
//! - `GET /devices`: every registry entry, present or not.
//! - `GET /devices/{id}`: one entry; `id` is an ECID (`0x1a2b…` or bare hex) or `udid:…`.
//! - `GET /events`: server-sent events, one `device` event per arrived / mode-changed / left.
//! - `GET /counters`: ignored, failed, vanished and stale identification counts, refused API
//!   requests, malformed usbmuxd-socket clients, running mux sessions.
//! - `POST /jobs` with `{"ecid": "0x…" | "port": "1-1.3", "ipsw": "<id>", "behavior":
//!   "erase"|"update"}`: starts a restore (201 with the job), or says why not (404 no such
//!   phone, 409 already restoring, 422 the IPSW does not fit, 503 this daemon runs no
//!   restores).
//! - `GET /jobs`, `GET /jobs/{id}`: the jobs; `GET /jobs/events`: server-sent `job` events, the
//!   job as it is after each change (phase, step, progress, result).
//! - `POST /devices/{id}/identify` with `{"color": "#rrggbb"}`: paints the screen of a phone in
//!   recovery mode that color ([`super::identify_button`]).
//! - `GET /metrics`: Prometheus text exposition ([`super::metrics`]).
//! - `GET /ports`: each port's health (verdict, reasons, counts, phones failed, median
//!   throughput, link speed) and the phones suspect themselves ([`super::port_health`]).
//! - `GET /`, `/app.js`, `/style.css`: the web dashboard ([`super::dashboard`]); browsers reach
//!   it through the optional TCP listener ([`super::tcp`]).
//!
//! Requests for anything else, or with an id that is not one, get a 4xx and a log line; the
//! daemon keeps serving.

use std::convert::Infallible;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path as UrlPath, State};
use axum::http::{StatusCode, Uri};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::Listener;
use axum::{Json, Router};
use futures_util::Stream;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use serde::Serialize;
use tokio::net::UnixListener;
use tokio::sync::broadcast;
use tokio::task::JoinSet;

use super::registry::{Counters, Entry, Key};
use super::Shared;

/// Why the socket could not be served.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Creating the socket's directory, binding or setting its mode failed.
    #[error("cannot {what} {path}: {source}")]
    Socket {
        /// What was being done.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Something else than a socket is at the path.
    #[error("{path} exists and is not a socket; not replacing it")]
    NotASocket {
        /// The path.
        path: PathBuf,
    },
}

/// The socket's permissions: owner and group read/write.
pub const SOCKET_MODE: u32 = 0o660;

/// Where the socket goes by default: `$XDG_RUNTIME_DIR/restation.sock` for a user, else the
/// service's `/run/restation/restation.sock`.
pub fn default_socket_path() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(dir) if !dir.is_empty() => Path::new(&dir).join("restation.sock"),
        _ => PathBuf::from("/run/restation/restation.sock"),
    }
}

/// Binds the socket at `path` (replacing a stale socket, never another kind of file) with
/// [`SOCKET_MODE`].
pub fn bind(path: &Path) -> Result<UnixListener, ApiError> {
    let err = |what, source| ApiError::Socket {
        what,
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| err("create the directory of", e))?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            std::fs::remove_file(path).map_err(|e| err("remove the stale socket", e))?;
        }
        Ok(_) => {
            return Err(ApiError::NotASocket {
                path: path.to_path_buf(),
            })
        }
        Err(_) => {}
    }
    let listener = UnixListener::bind(path).map_err(|e| err("bind", e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(SOCKET_MODE))
        .map_err(|e| err("set the mode of", e))?;
    Ok(listener)
}

/// The API's routes over `shared`.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/devices", get(devices))
        .route("/devices/{id}", get(device))
        .route(
            "/devices/{id}/identify",
            post(super::identify_button::route),
        )
        .route("/metrics", get(super::metrics::route))
        .route("/ports", get(super::port_health::route))
        .route("/", get(super::dashboard::index))
        .route("/app.js", get(super::dashboard::app_js))
        .route("/style.css", get(super::dashboard::style_css))
        .route("/events", get(events))
        .route("/counters", get(counters))
        .route("/jobs", post(start_job).get(list_jobs))
        .route("/jobs/events", get(job_events))
        .route("/jobs/{id}", get(job))
        .fallback(not_found)
        .with_state(shared)
}

/// How long in-flight requests may take to finish after shutdown is asked for; event streams
/// never finish by themselves and are cut at this deadline.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// Serves the API on `listener` until `shutdown` resolves. Each connection is served on its
/// own task; one that sends something that is not HTTP/1.1 gets a 400 from hyper, a log line
/// and a count in `/counters`, and the daemon goes on.
pub async fn serve(
    listener: UnixListener,
    shared: Arc<Shared>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let app = router(Arc::clone(&shared));
    serve_on(listener, app, shared, shutdown).await;
}

/// Serves `app` on any listener (the unix socket, the TCP listener) until `shutdown`
/// resolves, as [`serve`] does.
pub async fn serve_on<L: Listener>(
    mut listener: L,
    app: Router,
    shared: Arc<Shared>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            (stream, _) = listener.accept() => {
                let service = TowerToHyperService::new(app.clone());
                let shared = Arc::clone(&shared);
                connections.spawn(async move {
                    let served = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .with_upgrades()
                        .await;
                    if let Err(e) = served {
                        // A client hanging up on its event stream (`restation restore` once
                        // its job ended) is how such a stream ends, not a refusal.
                        if e.is_incomplete_message() || e.is_body_write_aborted() {
                            tracing::debug!(error = %e, "API client hung up");
                            return;
                        }
                        shared.api_refused.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(error = %e, "bad or broken API connection");
                    }
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::info!(
            open = connections.len(),
            "closing API connections still open (event streams)"
        );
        connections.abort_all();
    }
}

/// A JSON error body.
#[derive(Debug, Serialize)]
struct Problem {
    error: String,
}

pub(super) fn problem(shared: &Shared, status: StatusCode, error: String) -> Response {
    shared.api_refused.fetch_add(1, Ordering::Relaxed);
    tracing::warn!(%status, %error, "API request refused");
    (status, Json(Problem { error })).into_response()
}

async fn devices(State(shared): State<Arc<Shared>>) -> Json<Vec<Entry>> {
    Json(shared.registry().entries().cloned().collect())
}

async fn device(State(shared): State<Arc<Shared>>, UrlPath(id): UrlPath<String>) -> Response {
    let Some(key) = Key::parse(&id) else {
        let shown: String = id.chars().take(64).collect();
        return problem(
            &shared,
            StatusCode::BAD_REQUEST,
            format!("{shown:?} is not a device id (expected an ECID like 0x1a2b3c or udid:...)"),
        );
    };
    let entry = shared.registry().get(&key).cloned();
    match entry {
        Some(entry) => Json(entry).into_response(),
        None => problem(&shared, StatusCode::NOT_FOUND, format!("no device {key}")),
    }
}

async fn start_job(
    State(shared): State<Arc<Shared>>,
    body: Result<Json<super::jobs::JobRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(request) = match body {
        Ok(body) => body,
        Err(e) => return problem(&shared, StatusCode::BAD_REQUEST, e.body_text()),
    };
    let Some(ctx) = shared.job_context().cloned() else {
        return problem(
            &shared,
            StatusCode::SERVICE_UNAVAILABLE,
            "this daemon runs no restores".into(),
        );
    };
    let started = {
        let shared = Arc::clone(&shared);
        tokio::task::spawn_blocking(move || super::jobs::start(&shared, &ctx, &request)).await
    };
    use super::jobs::StartError as E;
    match started {
        Ok(Ok(id)) => match shared.jobs().get(id) {
            Some(job) => (StatusCode::CREATED, Json(job)).into_response(),
            None => problem(
                &shared,
                StatusCode::INTERNAL_SERVER_ERROR,
                "job lost".into(),
            ),
        },
        Ok(Err(e)) => {
            let status = match &e {
                E::NoPhone(_) => StatusCode::NOT_FOUND,
                E::Busy(..) => StatusCode::CONFLICT,
                E::Target | E::Behavior(_) => StatusCode::BAD_REQUEST,
                E::Takeover(_) => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::UNPROCESSABLE_ENTITY,
            };
            problem(&shared, status, e.to_string())
        }
        Err(_) => problem(
            &shared,
            StatusCode::INTERNAL_SERVER_ERROR,
            "the job's start failed".into(),
        ),
    }
}

async fn list_jobs(State(shared): State<Arc<Shared>>) -> Json<Vec<super::jobs::JobRecord>> {
    Json(shared.jobs().list())
}

async fn job(State(shared): State<Arc<Shared>>, UrlPath(id): UrlPath<String>) -> Response {
    match id.parse::<u64>().ok().and_then(|id| shared.jobs().get(id)) {
        Some(job) => Json(job).into_response(),
        None => {
            let shown: String = id.chars().take(32).collect();
            problem(&shared, StatusCode::NOT_FOUND, format!("no job {shown:?}"))
        }
    }
}

async fn job_events(
    State(shared): State<Arc<Shared>>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    sse(shared.jobs().subscribe(), "job", |update| &update.job)
}

/// What `/counters` shows.
#[derive(Debug, Serialize)]
struct AllCounters {
    #[serde(flatten)]
    registry: Counters,
    /// API requests refused with a 4xx, and connections that were not HTTP/1.1.
    api_refused: u64,
    /// usbmuxd-socket clients closed for sending something that was not the protocol.
    usbmuxd_malformed: u64,
    /// Phones with a running mux session (normal or restore mode).
    mux_sessions: u64,
}

async fn counters(State(shared): State<Arc<Shared>>) -> Json<AllCounters> {
    let registry = shared.registry().counters();
    Json(AllCounters {
        registry,
        api_refused: shared.api_refused.load(Ordering::Relaxed),
        usbmuxd_malformed: shared.usbmuxd_malformed.load(Ordering::Relaxed),
        mux_sessions: shared.sessions().values().filter(|s| s.is_alive()).count() as u64,
    })
}

async fn not_found(State(shared): State<Arc<Shared>>, uri: Uri) -> Response {
    let shown: String = uri.path().chars().take(64).collect();
    problem(
        &shared,
        StatusCode::NOT_FOUND,
        format!("no such endpoint {shown:?}"),
    )
}

async fn events(
    State(shared): State<Arc<Shared>>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    sse(shared.subscribe(), "device", |event| event)
}

/// A broadcast channel as server-sent events named `name`, each the JSON of `project(item)`;
/// a client that fell behind gets a `lagged` event with the number it missed.
fn sse<T, U>(
    rx: broadcast::Receiver<T>,
    name: &'static str,
    project: fn(&T) -> &U,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>>
where
    T: Clone + Send + 'static,
    U: Serialize + ?Sized + 'static,
{
    let stream = futures_util::stream::unfold(rx, move |mut rx| async move {
        let sse = match rx.recv().await {
            Ok(item) => SseEvent::default()
                .event(name)
                .json_data(project(&item))
                .unwrap_or_else(|_| SseEvent::default().comment("unencodable event")),
            Err(broadcast::error::RecvError::Lagged(n)) => {
                SseEvent::default().event("lagged").data(n.to_string())
            }
            Err(broadcast::error::RecvError::Closed) => return None,
        };
        Some((Ok(sse), rx))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}
