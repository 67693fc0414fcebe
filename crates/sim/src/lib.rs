//! A virtual iPhone: the device side of every protocol restation speaks, with faults on demand.
//!
//! The simulator is a product part, not a test helper: the same virtual phone backs the test
//! suite, `restation demo`, the VM bench and the benchmarks. This crate owns the *device* side
//! of each conversation and the fault language that makes a phone misbehave the way real ones
//! do on a bench (a pulled cable at 50 % of a DFU upload, a stall in the ASR stream, a phone
//! that enumerates at full speed).
//!
//! - [`profile::Profile`]: who the phone is (product, chip, board, ECID, serial, iOS build,
//!   nonces, UDID), built from `irecv`'s device table and a seed, with the strings it shows in
//!   each mode.
//! - [`phone::Phone`]: the phone across modes, sans-IO: transfers in with the time, bus events
//!   (leave, arrive in mode M with PID P) and timers out. Recovery ([`recovery`]: iBoot
//!   commands, environment, uploads, `bootx`), DFU ([`dfu`]: the DFU 1.1 state machine, suffix
//!   and CRC check, re-enumeration to the next stage), normal mode ([`normal`]: usbmux and
//!   lockdownd on 62078 with `lockdown`'s device codec: QueryType, GetValue, sessions,
//!   EnterRecovery → recovery) and restore mode ([`restore`]: restored's message loop, and
//!   [`asr`], the ASR sink that checks every chunk's SHA-1); descriptors per mode in
//!   [`descriptors`].
//! - [`fault`] (the language) and [`injector`] (running it, seeded): each fault produces the
//!   USB-level symptom a real phone would (NO_DEVICE, PIPE, EPROTO, a timeout, a full-speed
//!   enumeration, a slow link, a phone that never comes back).
//! - [`hub::VirtualHub`]: an in-process `usb::UsbBackend` with N ports, hotplug events and a
//!   [`clock`] (virtual for tests, real for the demo); each phone behind its own lock.
//! - [`check::ImageCheck`]: the hook where personalization decides what a phone boots.
//! - [`usbip`]: the phones as real USB devices for a real kernel (the VM bench), over USB/IP.
//!
//! ```
//! use std::sync::Arc;
//! use sim::clock::{Clock, ManualClock};
//! use sim::fault::{Action, FaultSpec, Point, Trigger};
//! use sim::hub::VirtualHub;
//! use sim::phone::{Mode, Options, Phone, RecoveryStage};
//! use sim::profile::Profile;
//! use usb::{Control, UsbBackend};
//!
//! // The fault language, shared with the CLI.
//! let spec: FaultSpec = "dfu-upload:unplug@50%x1,final-status:status=6".parse()?;
//! let first = &spec.faults[0];
//! assert_eq!((first.point, first.action), (Point::DfuUpload, Action::Unplug));
//! assert!(first.trigger.reached_at(512, 1024));
//! assert_eq!(first.count, Some(1)); // only the first DFU upload fails
//! assert_eq!(spec.to_string(), "dfu-upload:unplug@50%x1,final-status:status=6");
//!
//! // An iPhone 13 Pro Max in recovery mode on port 1-1.1 of a virtual hub.
//! let clock = ManualClock::new();
//! let hub = VirtualHub::new(4, clock.clone());
//! let profile = Profile::for_product_type("iPhone14,3", 7)?;
//! let options = Options { start: Mode::Recovery(RecoveryStage::Iboot), ..Options::default() };
//! hub.plug(0, Phone::new(profile, options, clock.now()))?;
//!
//! let info = hub.devices()?.remove(0);
//! assert_eq!((info.vendor_id(), info.product_id()), (0x05AC, 0x1281));
//! let mut phone = hub.open(info.id)?;
//! let t = std::time::Duration::from_secs(1);
//! phone.control_out(Control::new(0x40, 0, 0, 0), b"bgcolor 0 128 255\0", t)?;
//! phone.control_out(Control::new(0x40, 0, 0, 0), b"getenv auto-boot\0", t)?;
//! assert_eq!(phone.control_in(Control::new(0xC0, 0, 0, 0), 255, t)?, b"true\0");
//! assert_eq!(hub.with_phone(0, |p| p.core().record.bgcolor), Some(Some((0, 128, 255))));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod asr;
pub mod check;
pub mod clock;
pub mod command;
pub mod descriptors;
pub mod dfu;
pub mod fault;
pub mod hub;
pub mod injector;
pub mod mux_port;
pub mod normal;
pub mod pairing;
pub mod phone;
pub mod profile;
pub mod recovery;
pub mod restore;
pub mod rng;
pub mod usbip;

#[doc(hidden)]
pub mod fuzzing;
