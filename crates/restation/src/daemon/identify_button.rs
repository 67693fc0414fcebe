//! The dashboard's "identify" button: `POST /devices/{id}/identify` with `{"color":
//! "#rrggbb"}` paints the screen of a phone in recovery mode with its tile's color, by sending
//! iBoot the command `bgcolor R G B`, so the technician sees which phone on the bench is which
//! tile.
//!
//! Only a phone that is on the bus, in recovery mode and not being restored is touched: iBoot
//! is the only mode that has a screen to paint, and a running job owns its phone. The phone is
//! opened for the one command and closed again (a recovery-mode phone has no mux session to
//! take it from).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use irecv::mode::Mode;
use serde::{Deserialize, Serialize};

use super::api::problem;
use super::registry::Key;
use super::Shared;

/// How long iBoot may take to take the command.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

/// A screen color, `#rrggbb` in JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Color {
    /// Red.
    pub r: u8,
    /// Green.
    pub g: u8,
    /// Blue.
    pub b: u8,
}

/// A color that is not `#rrggbb`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a color (expected #rrggbb)")]
pub struct ColorError(String);

impl std::str::FromStr for Color {
    type Err = ColorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ColorError(s.chars().take(16).collect());
        let hex = s.strip_prefix('#').ok_or_else(bad)?;
        if hex.len() != 6 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        let channel = |i: usize| {
            hex.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(bad)
        };
        Ok(Color {
            r: channel(0)?,
            g: channel(2)?,
            b: channel(4)?,
        })
    }
}

impl std::fmt::Display for Color {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "#{:02x}{:02x}{:02x}", self.r, self.g, self.b)
    }
}

impl Color {
    /// The iBoot command that paints the screen this color.
    pub fn command(&self) -> String {
        format!("bgcolor {} {} {}", self.r, self.g, self.b)
    }
}

/// What the route takes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentifyRequest {
    /// `#rrggbb`.
    pub color: String,
}

/// What the route answers on success.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identified {
    /// The phone.
    pub id: String,
    /// The color painted.
    pub color: String,
    /// The iBoot command sent.
    pub command: String,
}

/// Why a phone could not be identified by its screen.
#[derive(Debug, thiserror::Error)]
pub enum IdentifyButtonError {
    /// Not a device id.
    #[error("{0:?} is not a device id (expected an ECID like 0x1a2b3c or udid:...)")]
    BadId(String),
    /// Not a color.
    #[error(transparent)]
    Color(#[from] ColorError),
    /// No such phone on the bus.
    #[error("no phone {0} on the bus")]
    NoPhone(String),
    /// Not in recovery mode.
    #[error("phone {id} is in {mode} mode; only recovery mode (iBoot) can paint its screen")]
    NotRecovery {
        /// The phone.
        id: String,
        /// Its mode.
        mode: Mode,
    },
    /// A restore owns it.
    #[error("phone {id} is being restored (job {job}); not touching it")]
    Busy {
        /// The phone.
        id: String,
        /// The job.
        job: u64,
    },
    /// This daemon has no USB backend to open phones with.
    #[error("this daemon cannot open phones")]
    NoBackend,
    /// Opening the phone failed.
    #[error("cannot open phone {id}: {source}")]
    Open {
        /// The phone.
        id: String,
        /// Why.
        source: usb::UsbError,
    },
    /// iBoot refused or the transfer failed.
    #[error("`{command}` to phone {id}: {source}")]
    Command {
        /// The phone.
        id: String,
        /// The command.
        command: String,
        /// Why.
        source: Box<irecv::recovery::RecoveryError>,
    },
}

impl IdentifyButtonError {
    /// The HTTP status that says it.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadId(_) | Self::Color(_) => StatusCode::BAD_REQUEST,
            Self::NoPhone(_) => StatusCode::NOT_FOUND,
            Self::NotRecovery { .. } | Self::Busy { .. } => StatusCode::CONFLICT,
            Self::NoBackend => StatusCode::SERVICE_UNAVAILABLE,
            Self::Open { .. } | Self::Command { .. } => StatusCode::BAD_GATEWAY,
        }
    }
}

/// Paints the screen of phone `id` (blocking: opens the phone and sends one command).
pub fn identify(
    shared: &Shared,
    id: &str,
    color: Color,
) -> Result<Identified, IdentifyButtonError> {
    let key =
        Key::parse(id).ok_or_else(|| IdentifyButtonError::BadId(id.chars().take(64).collect()))?;
    let entry = shared
        .registry()
        .get(&key)
        .filter(|e| e.present)
        .cloned()
        .ok_or_else(|| IdentifyButtonError::NoPhone(key.to_string()))?;
    if !matches!(entry.mode, Mode::Recovery(_)) {
        return Err(IdentifyButtonError::NotRecovery {
            id: entry.id,
            mode: entry.mode,
        });
    }
    if let Some(job) = shared
        .jobs()
        .list()
        .into_iter()
        .find(|j| j.state.is_active() && j.ecid == entry.id)
    {
        return Err(IdentifyButtonError::Busy {
            id: entry.id,
            job: job.id,
        });
    }
    let device = entry
        .device
        .ok_or_else(|| IdentifyButtonError::NoPhone(entry.id.clone()))?;
    let backend = shared
        .job_context()
        .map(|ctx| Arc::clone(&ctx.backend))
        .ok_or(IdentifyButtonError::NoBackend)?;
    let mut dev = backend
        .open(device)
        .map_err(|source| IdentifyButtonError::Open {
            id: entry.id.clone(),
            source,
        })?;
    let text = color.command();
    let command_err = |source| IdentifyButtonError::Command {
        id: entry.id.clone(),
        command: text.clone(),
        source: Box::new(source),
    };
    irecv::recovery::claim_interfaces(&mut *dev).map_err(command_err)?;
    let command = irecv::recovery::Command::new(&text).map_err(|e| command_err(e.into()))?;
    irecv::recovery::send_command(&mut *dev, &command, COMMAND_TIMEOUT).map_err(command_err)?;
    tracing::info!(id = %entry.id, %color, "identify: screen painted");
    Ok(Identified {
        id: entry.id,
        color: color.to_string(),
        command: text,
    })
}

/// `POST /devices/{id}/identify`.
pub async fn route(
    State(shared): State<Arc<Shared>>,
    UrlPath(id): UrlPath<String>,
    body: Result<Json<IdentifyRequest>, JsonRejection>,
) -> Response {
    let Json(request) = match body {
        Ok(body) => body,
        Err(e) => return problem(&shared, StatusCode::BAD_REQUEST, e.body_text()),
    };
    let color = match request.color.parse::<Color>() {
        Ok(c) => c,
        Err(e) => return problem(&shared, StatusCode::BAD_REQUEST, e.to_string()),
    };
    let done = {
        let shared = Arc::clone(&shared);
        tokio::task::spawn_blocking(move || identify(&shared, &id, color)).await
    };
    match done {
        Ok(Ok(identified)) => Json(identified).into_response(),
        Ok(Err(e)) => problem(&shared, e.status(), e.to_string()),
        Err(_) => problem(
            &shared,
            StatusCode::INTERNAL_SERVER_ERROR,
            "the identify request failed".into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::bench::BenchSpec;
    use crate::daemon::{jobs, Daemon};
    use axum::body::to_bytes;
    use sim::clock::{Clock, ManualClock};

    const DEADLINE: Duration = Duration::from_secs(60);

    async fn post(shared: &Arc<Shared>, id: &str, color: &str) -> (StatusCode, serde_json::Value) {
        let response = route(
            State(Arc::clone(shared)),
            UrlPath(id.to_string()),
            Ok(Json(IdentifyRequest {
                color: color.to_string(),
            })),
        )
        .await;
        let status = response.status();
        let body = to_bytes(response.into_body(), 1 << 20).await.unwrap();
        (status, serde_json::from_slice(&body).unwrap())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_recovery_phone_shows_the_tile_color_and_others_are_refused() {
        let clock: Arc<dyn Clock> = ManualClock::new();
        let spec = BenchSpec::Named(vec![
            "iPhone10,3:recovery".parse().unwrap(),
            "iPhone10,3:dfu".parse().unwrap(),
        ]);
        let hub = spec.hub(1, clock).unwrap();
        let shared = Shared::new();
        let backend: Arc<dyn usb::UsbBackend> = Arc::new(hub.clone());
        let store = tempfile::tempdir().unwrap();
        shared.enable_jobs(jobs::JobContext {
            backend: Arc::clone(&backend),
            store: store.path().to_path_buf(),
            personalization: Arc::new(jobs::AsShipped),
            deadlines: restore::phase::Deadlines::default(),
            runtime: tokio::runtime::Handle::current(),
            pair_records: None,
        });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let driver = tokio::spawn(Daemon::new(backend, Arc::clone(&shared)).run(async {
            let _ = stopped.await;
        }));
        let ids = |mode: &'static str| {
            let shared = Arc::clone(&shared);
            async move {
                tokio::time::timeout(
                    DEADLINE,
                    shared.wait_for_entry(|r| {
                        r.entries()
                            .find(|e| e.present && e.mode.as_str() == mode)
                            .map(|e| e.id.clone())
                    }),
                )
                .await
                .unwrap()
            }
        };
        let recovery = ids("recovery").await;
        let dfu = ids("dfu").await;
        assert_eq!(hub.with_phone(0, |p| p.core().record.bgcolor), Some(None));

        let (status, body) = post(&shared, &recovery, "#ff8000").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["command"], "bgcolor 255 128 0");
        assert_eq!(
            hub.with_phone(0, |p| p.core().record.bgcolor),
            Some(Some((255, 128, 0))),
            "the recovery phone's screen is the tile's color"
        );
        // Again, another color: the phone was closed after the first and opens again.
        let (status, _) = post(&shared, &recovery, "#34c759").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            hub.with_phone(0, |p| p.core().record.bgcolor),
            Some(Some((0x34, 0xc7, 0x59)))
        );

        let (status, body) = post(&shared, &dfu, "#ff8000").await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        assert!(
            body["error"].as_str().unwrap().contains("dfu mode"),
            "{body}"
        );
        let (status, _) = post(&shared, &recovery, "orange").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let (status, _) = post(&shared, "0x1234", "#ff8000").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _) = post(&shared, "not-an-id", "#ff8000").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(
            hub.with_phone(0, |p| p.core().record.bgcolor),
            Some(Some((0x34, 0xc7, 0x59))),
            "refused requests touch nothing"
        );

        let _ = stop.send(());
        driver.await.unwrap().unwrap();
    }

    #[test]
    fn colors_parse_from_hex_and_make_the_bgcolor_command() {
        let c: Color = "#ff8000".parse().unwrap();
        assert_eq!(
            c,
            Color {
                r: 255,
                g: 128,
                b: 0
            }
        );
        assert_eq!(c.command(), "bgcolor 255 128 0");
        assert_eq!(c.to_string(), "#ff8000");
        for bad in ["ff8000", "#ff80", "#gg8000", "#ff80001", "", "#", "#ééé"] {
            assert!(bad.parse::<Color>().is_err(), "{bad:?}");
        }
    }
}
