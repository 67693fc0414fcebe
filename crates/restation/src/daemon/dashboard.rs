//! The web dashboard a bench monitor shows: `GET /` (the page), `/app.js`, `/style.css`,
//! plain HTML, CSS and JavaScript embedded in the binary (no build step). The page reads the
//! same API as the command line (`/devices`, `/jobs`) and follows it live over the server-sent
//! event streams (`/events`, `/jobs/events`); the identify button posts to
//! `/devices/{id}/identify` ([`super::identify_button`]).
//!
//! It is served on the unix socket and, for browsers, on the optional TCP listener
//! ([`super::tcp`]).

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use serde::Serialize;

use super::jobs::JobRecord;
use super::registry::Entry;
use super::Shared;

/// The page.
pub const INDEX_HTML: &str = include_str!("dashboard/index.html");
/// Its script.
pub const APP_JS: &str = include_str!("dashboard/app.js");
/// Its style sheet.
pub const STYLE_CSS: &str = include_str!("dashboard/style.css");

/// The page and its parts change only with the binary; the browser must still ask again
/// after an upgrade.
const CACHE: (header::HeaderName, &str) = (header::CACHE_CONTROL, "no-cache");

/// Where the page takes its first snapshot of the API.
const SNAPSHOT_SLOT: &str = r#"<script id="snapshot" type="application/json">{}</script>"#;

/// What the page's snapshot holds: `/devices`, `/jobs` and `/ports` as they are now.
#[derive(Serialize)]
struct Snapshot {
    devices: Vec<Entry>,
    jobs: Vec<JobRecord>,
    ports: super::port_health::Report,
}

/// The page with `shared`'s devices and jobs in its snapshot slot, so that its first paint
/// needs no request (and a browser that takes the page at its load event sees the tiles).
pub fn page(shared: &Shared) -> String {
    // Each lock is taken and let go on its own (the registry's guard must not outlive its
    // line: `live_ports` takes it again).
    let ports = shared
        .ports()
        .report(&super::port_health::live_ports(shared));
    let devices = shared.registry().entries().cloned().collect();
    let snapshot = Snapshot {
        devices,
        jobs: shared.jobs().list(),
        ports,
    };
    let Ok(json) = serde_json::to_string(&snapshot) else {
        return INDEX_HTML.to_string();
    };
    // `<` only occurs inside JSON strings, where \u003c means the same; no `</script>` can end
    // the element early.
    let json = json.replace('<', "\\u003c");
    INDEX_HTML.replacen(
        SNAPSHOT_SLOT,
        &format!(r#"<script id="snapshot" type="application/json">{json}</script>"#),
        1,
    )
}

/// `GET /`.
pub async fn index(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8"), CACHE],
        page(&shared),
    )
}

/// `GET /app.js`.
pub async fn app_js() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            CACHE,
        ],
        APP_JS,
    )
}

/// `GET /style.css`.
pub async fn style_css() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8"), CACHE],
        STYLE_CSS,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_its_script_and_style_relative_to_itself() {
        assert!(INDEX_HTML.contains("src=\"app.js\""));
        assert!(INDEX_HTML.contains("href=\"style.css\""));
        assert!(INDEX_HTML.contains(SNAPSHOT_SLOT));
        for route in [
            "/devices",
            "/jobs",
            "/events",
            "/jobs/events",
            "/identify",
            "/ports",
        ] {
            assert!(APP_JS.contains(route), "app.js uses {route}");
        }
    }

    #[test]
    fn the_snapshot_fills_its_slot_and_cannot_close_the_script_element() {
        let shared = Shared::new();
        let page = page(&shared);
        assert!(!page.contains(SNAPSHOT_SLOT));
        let start = page
            .find(r#"<script id="snapshot" type="application/json">"#)
            .unwrap();
        let json = page[start..]
            .split_once('>')
            .and_then(|(_, rest)| rest.split_once("</script>"))
            .map(|(json, _)| json)
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(v["devices"], serde_json::json!([]));
        assert_eq!(v["jobs"], serde_json::json!([]));
        assert_eq!(v["ports"]["ports"], serde_json::json!([]));
        let escaped = serde_json::to_string("</script><b>")
            .unwrap()
            .replace('<', "\\u003c");
        assert!(!escaped.contains('<'));
        assert_eq!(
            serde_json::from_str::<String>(&escaped).unwrap(),
            "</script><b>"
        );
    }
}
