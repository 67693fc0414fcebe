//! restation, the restore station for iPhone repair benches: the daemon and the command line
//! in one crate. The binary (`src/main.rs`) only parses arguments; everything else lives here
//! so that benchmarks and tests can drive the same code.
//!
//! - [`daemon`]: `restation serve`'s insides (registry, identification, mux sessions, the
//!   local API, the usbmuxd-compatible socket, the virtual bench).
//! - [`cli`]: one module per subcommand.
//! - [`sdnotify`]: systemd readiness.

pub mod cli;
pub mod daemon;
pub mod sdnotify;
