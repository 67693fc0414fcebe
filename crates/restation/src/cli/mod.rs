//! One module per subcommand. Each exposes its clap arguments and a `run` function that
//! returns the process exit code.

pub mod config;
pub mod demo;
pub mod devices;
pub mod explain;
pub mod history;
pub mod http;
pub mod ipsw;
pub mod irecv;
pub mod irecv_device;
pub mod restore;
pub mod serve;
pub mod sim;
pub mod version;
