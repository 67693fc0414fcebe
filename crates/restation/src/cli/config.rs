//! The configuration file, `/etc/restation/restation.toml` by default (`--config PATH` names
//! another). Every key is optional and the command line wins over the file; a missing default
//! file is no error, a missing named one is.
//!
//! ```toml
//! # The local API (JSON over HTTP on a unix socket, mode 0660).
//! socket = "/run/restation/restation.sock"
//! # A usbmuxd-compatible socket for libimobiledevice's tools (off when absent).
//! usbmuxd_socket = "/run/restation/usbmuxd"
//! # Pair records and SystemConfiguration.plist for that socket.
//! pair_records = "/var/lib/lockdown"
//! # The IPSW store restores read from (`restation ipsw stage` fills it).
//! store = "/var/cache/restation/ipsw"
//! # The job history (SQLite; or "postgres://user:pw@host/db" for one several stations
//! # share). `restation history` exports it.
//! history = "/var/lib/restation/history.sqlite"
//! # The signing server for real phones' tickets (Apple's by default); https:// works too,
//! # with tss_ca naming a CA (PEM) trusted besides the public roots.
//! tss_url = "http://gs.apple.com/TSS/controller?action=2"
//! tss_ca = "/etc/restation/tss-proxy-ca.pem"
//! # A TCP listener for the web dashboard and the API (off when absent). A loopback address
//! # needs no token; any other needs http_token (16+ URL-safe characters), sent as
//! # `Authorization: Bearer TOKEN` or opened as http://HOST:PORT/?token=TOKEN.
//! http = "127.0.0.1:8080"
//! http_token = "change-me-to-a-long-random-string"
//! # Restores run at once per USB host controller; more wait in a queue, oldest first
//! # (0: no limit).
//! max_restores_per_controller = 8
//! # Watch real USB (libusb).
//! usb = true
//! # A virtual bench beside (or instead of) real USB: N mixed phones, or named ones.
//! sim = 0
//! sim_profile = ["iPhone14,3:normal", "iPhone10,3:recovery"]
//! ```

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

/// Where the configuration is read from when `--config` is not given.
pub const DEFAULT_PATH: &str = "/etc/restation/restation.toml";

/// The file's keys.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The API socket.
    pub socket: Option<PathBuf>,
    /// The usbmuxd-compatible socket.
    pub usbmuxd_socket: Option<PathBuf>,
    /// The pair-record directory.
    pub pair_records: Option<PathBuf>,
    /// Watch real USB.
    pub usb: Option<bool>,
    /// N mixed virtual phones.
    pub sim: Option<usize>,
    /// Named virtual phones, `PRODUCT:MODE`.
    #[serde(default)]
    pub sim_profile: Vec<String>,
    /// The IPSW store restores read from.
    pub store: Option<PathBuf>,
    /// The signing (TSS) server real phones' tickets come from [default: Apple's,
    /// `http://gs.apple.com/TSS/controller?action=2`].
    pub tss_url: Option<String>,
    /// A CA certificate (PEM) trusted besides the public roots for an `https://` TSS server.
    pub tss_ca: Option<PathBuf>,
    /// The dashboard's TCP listener (off when absent).
    pub http: Option<std::net::SocketAddr>,
    /// The token that listener requires (needed on any address but loopback).
    pub http_token: Option<String>,
    /// The job history: a SQLite file, or a `postgres://` URL several stations share
    /// [default: /var/lib/restation/history.sqlite].
    pub history: Option<PathBuf>,
    /// Restores run at once per USB host controller [default: 8; 0: no limit].
    pub max_restores_per_controller: Option<usize>,
}

impl Config {
    /// Reads `path`, or the default file when `path` is `None` (absent: all defaults).
    pub fn load(path: Option<&Path>) -> anyhow::Result<Config> {
        let (path, required) = match path {
            Some(p) => (p, true),
            None => (Path::new(DEFAULT_PATH), false),
        };
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Config::default())
            }
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("reading the configuration {}", path.display()))
            }
        };
        Config::parse(&text).with_context(|| format!("in the configuration {}", path.display()))
    }

    /// Parses the file's text.
    pub fn parse(text: &str) -> anyhow::Result<Config> {
        Ok(toml::from_str(text)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_example_parses() {
        let doc = include_str!("config.rs");
        let example: String = doc
            .lines()
            .skip_while(|l| !l.starts_with("//! ```toml"))
            .skip(1)
            .take_while(|l| !l.starts_with("//! ```"))
            .map(|l| l.trim_start_matches("//!").trim_start_matches(' '))
            .collect::<Vec<_>>()
            .join("\n");
        let c = Config::parse(&example).unwrap();
        assert_eq!(c.usb, Some(true));
        assert_eq!(c.sim_profile.len(), 2);
        assert_eq!(
            c.pair_records.as_deref(),
            Some(Path::new("/var/lib/lockdown"))
        );
    }

    #[test]
    fn unknown_keys_and_bad_types_are_errors_and_a_missing_default_file_is_not() {
        assert!(Config::parse("sokcet = \"/x\"").is_err());
        assert!(Config::parse("usb = \"yes\"").is_err());
        assert_eq!(Config::parse("").unwrap(), Config::default());
        assert!(Config::load(Some(Path::new("/nonexistent/restation.toml"))).is_err());
    }
}
