//! `ipsw` owns the firmware side of a restore: the IPSW a phone is restored from. It reads
//! `BuildManifest.plist` and `Restore.plist` into types ([`BuildManifest`], [`BuildIdentity`],
//! [`Component`], [`Digest`]), picks the build identity a device gets ([`BuildManifest::select`]
//! by ApChipID/ApBoardID or DeviceClass, then Erase/Update), and keeps a content-addressed
//! [`Store`]: an IPSW is staged once, in one streaming pass that computes SHA-1 and SHA-256 of
//! the whole file on two threads and checks every component `Digest` (SHA-1/256/384 by length)
//! against the member's bytes, and is renamed into the store only when all of it matched.
//! It also writes synthetic IPSWs shaped like a real generation's ([`synth`]) for tests, demos
//! and benchmarks. Nothing here panics on what a file or a server sends: every problem is a
//! typed [`Error`].
//!
//! ```
//! use ipsw::{profile, synth, BuildManifest, DeviceMatch, RestoreBehavior, Store, StageOptions};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let ipsw = dir.path().join("d64.ipsw");
//! let d64 = profile::profile("iPhone14,3").unwrap();
//! synth::synthesize(d64, &synth::SynthOptions { os_size: 1 << 20 }, &ipsw).unwrap();
//!
//! let store = Store::open(dir.path().join("store")).unwrap();
//! let staged = store.stage_file(&ipsw, &StageOptions::default()).unwrap();
//! assert!(staged.record.components_checked > 20);
//!
//! let (manifest, _restore) = ipsw::read_manifest(&staged.path).unwrap();
//! let id = manifest
//!     .select(&DeviceMatch::Chip { cpid: 0x8110, bdid: 0x0E }, RestoreBehavior::Erase)
//!     .unwrap();
//! assert_eq!(id.info.device_class, "d64ap");
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod archive;
pub mod digest;
pub mod error;
pub mod im4p;
pub mod manifest;
pub mod profile;
pub mod store;
pub mod synth;
pub mod verify;
pub mod zipwrite;

pub use digest::{Algorithm, Digest};
pub use error::Error;
pub use im4p::Im4p;
pub use manifest::{
    BuildIdentity, BuildManifest, Component, DeviceMapEntry, DeviceMatch, IdentityInfo,
    RestoreBehavior, RestoreInfo,
};
pub use store::{read_manifest, Progress, Record, StageOptions, Staged, Store, VerifyOutcome};

/// Entry points of the fuzz targets (`crates/ipsw/fuzz`), also replayed over the seed corpus by
/// `tests/fuzz_corpus.rs`. Each runs a decoder on arbitrary bytes and checks its invariants.
#[doc(hidden)]
pub mod fuzzing {
    use crate::archive::{is_safe_name, Archive};
    use crate::{BuildManifest, DeviceMatch, Im4p};

    /// Bytes → BuildManifest; a parsed manifest can select each of its own identities.
    pub fn manifest(data: &[u8]) {
        let Ok(m) = BuildManifest::from_bytes(data) else {
            return;
        };
        for id in &m.identities {
            let device = DeviceMatch::Chip {
                cpid: id.ap_chip_id,
                bdid: id.ap_board_id,
            };
            let chosen = m.select(&device, id.info.restore_behavior);
            assert!(chosen.is_ok_and(|c| c.ap_chip_id == id.ap_chip_id
                && c.ap_board_id == id.ap_board_id
                && c.info.restore_behavior == id.info.restore_behavior));
            for c in &id.components {
                if let Some(d) = &c.digest {
                    assert_eq!(d.algorithm().digest_len(), d.as_bytes().len());
                }
            }
        }
    }

    /// Bytes → IM4P; strict DER means re-encoding gives the same bytes.
    pub fn im4p(data: &[u8]) {
        let Ok(m) = Im4p::decode(data) else { return };
        assert_eq!(m.encode(), data);
    }

    /// Bytes → zip layout; every member is safe-named, in bounds, and reading it never panics.
    pub fn archive(data: &[u8]) {
        let path = std::path::Path::new("fuzz.ipsw");
        let Ok(a) = Archive::read(data, data.len() as u64, path) else {
            return;
        };
        for m in a.members() {
            assert!(is_safe_name(&m.name));
            assert!(m.data_end() <= data.len() as u64);
            let _ = a.read_member(data, &m.name, 1 << 20);
        }
    }
}
