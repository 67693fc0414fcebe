//! A virtual iPhone: the device side of every protocol restation speaks, with faults on demand.
//!
//! The simulator is a product part, not a test helper: the same virtual phone backs the test
//! suite, `restation demo`, the VM bench and the benchmarks. This crate owns the *device* side
//! of each conversation and the fault language that makes a phone misbehave the way real ones
//! do on a bench (a pulled cable at 50 % of a DFU upload, a stall in the ASR stream, a phone
//! that enumerates at full speed).
//!
//! ```
//! use sim::fault::{Action, FaultSpec, Point, Trigger};
//!
//! let spec: FaultSpec = "dfu-upload:unplug@50%x1,final-status:status=6".parse()?;
//! let first = &spec.faults[0];
//! assert_eq!((first.point, first.action), (Point::DfuUpload, Action::Unplug));
//! assert!(first.trigger.reached_at(512, 1024));
//! assert_eq!(first.count, Some(1)); // only the first DFU upload fails
//! assert_eq!(spec.to_string(), "dfu-upload:unplug@50%x1,final-status:status=6");
//! # Ok::<(), sim::fault::FaultSpecError>(())
//! ```

pub mod fault;

#[doc(hidden)]
pub mod fuzzing;
