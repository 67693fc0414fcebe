//! Virtual phones as real USB devices for a real kernel, over USB/IP.
//!
//! The guest kernel of the VM bench loads `vhci-hcd` and runs `usbip attach -r HOST -b 1-1`;
//! from then on it enumerates the phone in port 0 exactly as it would a phone on a cable, and
//! the peer tools (irecovery, usbmuxd, ideviceinfo) talk to it through libusb. Every descriptor
//! (string 1 = the nonces in recovery and DFU, endpoint 0x04 for recovery uploads...) and every
//! answer comes from the [`crate::phone::Phone`], so the kernel sees what the simulator models.
//!
//! - [`wire`]: the protocol's messages and their byte layout (sans-IO codec).
//! - [`session`]: URBs of one imported enumeration against the phone (pending reads, unlinks,
//!   the port-reset probe, Linux errno statuses).
//! - [`connection`]: one TCP connection, sans-IO: device list, import, then URB traffic; the
//!   phones are reached through [`connection::Ports`] ([`connection::HubPorts`] for a
//!   [`crate::hub::VirtualHub`]).
//! - [`server`]: the threaded driver, [`UsbipServer`], and the [`ServerEvent`]s the VM bench
//!   logs (`restation sim usbip`).
//!
//! A phone that re-enumerates (mode change, reboot) ends its connection; the guest sees the
//! disconnect, and the next enumeration is exported under the same bus ID for the next import.
//!
//! ```
//! use std::time::Instant;
//! use sim::clock::{Clock, ManualClock};
//! use sim::hub::VirtualHub;
//! use sim::phone::{Mode, Options, Phone, RecoveryStage};
//! use sim::profile::Profile;
//! use sim::usbip::connection::{Connection, HubPorts};
//! use sim::usbip::wire::{CmdSubmit, Command, OpReply, OpRequest, Return};
//! use usb::Direction;
//!
//! // A recovery-mode phone in port 0, exported as bus ID 1-1.
//! let clock = ManualClock::new();
//! let hub = VirtualHub::new(1, clock.clone());
//! let options = Options { start: Mode::Recovery(RecoveryStage::Iboot), ..Options::default() };
//! hub.plug(0, Phone::new(Profile::for_product_type("iPhone10,3", 1)?, options, clock.now()))?;
//! let ports = HubPorts::new(hub);
//!
//! // What the guest's `usbip attach -b 1-1` sends, handled without any socket.
//! let mut conn = Connection::new();
//! let mut bytes = Vec::new();
//! OpRequest::Import { busid: "1-1".into() }.encode(&mut bytes)?;
//! conn.handle_input(&bytes, &ports, clock.now())?;
//! let reply = conn.poll_transmit().unwrap();
//! let Some((OpReply::Imported(device), _)) = OpReply::decode(&reply)? else { panic!() };
//! assert_eq!((device.id_vendor, device.id_product), (0x05AC, 0x1281));
//!
//! // The kernel reads the device descriptor on endpoint 0.
//! let get_device = CmdSubmit {
//!     seqnum: 1,
//!     devid: device.devid(),
//!     direction: Direction::In,
//!     ep: 0,
//!     transfer_flags: 0x200,
//!     transfer_buffer_length: 18,
//!     start_frame: 0,
//!     number_of_packets: 0,
//!     interval: 0,
//!     setup: [0x80, 6, 0, 1, 0, 0, 18, 0],
//!     data: vec![],
//!     iso: vec![],
//! };
//! let mut bytes = Vec::new();
//! Command::Submit(get_device).encode(&mut bytes)?;
//! conn.handle_input(&bytes, &ports, clock.now())?;
//! let out = conn.poll_transmit().unwrap();
//! let Some((Return::Submit(ret), _)) = Return::decode(&out, |_| Some(Direction::In))? else {
//!     panic!()
//! };
//! assert_eq!((ret.status, ret.data.len()), (0, 18));
//! assert_eq!(&ret.data[8..12], &[0xAC, 0x05, 0x81, 0x12]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod connection;
pub mod server;
pub mod session;
pub mod wire;

pub use server::{ServerEvent, UsbipServer};
