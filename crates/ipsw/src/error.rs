//! Everything that can go wrong with an IPSW, each case carrying what was expected and what
//! came.

use std::path::PathBuf;

use crate::digest::{Algorithm, Digest};
use crate::manifest::RestoreBehavior;

/// Errors of the `ipsw` crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file system operation failed.
    #[error("{op} {}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// On which path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The disk filled up while writing.
    #[error("no space left on the store's disk while writing {} ({written} bytes written)", path.display())]
    DiskFull {
        /// The partial file (already removed).
        path: PathBuf,
        /// Bytes written before the failure.
        written: u64,
    },
    /// Not a property list.
    #[error("{file} is not a valid property list")]
    Plist {
        /// Which plist.
        file: &'static str,
        /// The parser's word.
        source: plist::Error,
    },
    /// A key has the wrong type.
    #[error("{file}: {key} is not a {expected}")]
    Field {
        /// Which plist.
        file: &'static str,
        /// The key.
        key: String,
        /// The type expected.
        expected: &'static str,
    },
    /// A required key is absent.
    #[error("{file}: required key {key} is missing")]
    MissingField {
        /// Which plist.
        file: &'static str,
        /// The key.
        key: String,
    },
    /// A number that does not parse (hex string or integer expected).
    #[error("{file}: {key} = {value} is not a 32-bit integer or hex string")]
    Integer {
        /// Which plist.
        file: &'static str,
        /// The key.
        key: String,
        /// What was there.
        value: String,
    },
    /// `RestoreBehavior` other than Erase or Update.
    #[error("restore behavior {value:?} is neither Erase nor Update")]
    RestoreBehavior {
        /// What was there.
        value: String,
    },
    /// A digest whose length names no algorithm.
    #[error("a digest of {len} bytes names no algorithm (20 SHA-1, 32 SHA-256, 48 SHA-384)")]
    DigestLength {
        /// The length.
        len: usize,
    },
    /// A component digest whose length names no algorithm.
    #[error(
        "component {component}: digest of {len} bytes names no algorithm (20, 32 or 48 expected)"
    )]
    ComponentDigestLength {
        /// The component.
        component: String,
        /// The length.
        len: usize,
    },
    /// Hex text that is not a digest.
    #[error("{text:?} is not a hex digest")]
    DigestHex {
        /// The text.
        text: String,
    },
    /// The IPSW has no identity for this device.
    #[error("this IPSW ({build}) has no build identity for {device}; it has: {}", available.join(", "))]
    NoIdentityForDevice {
        /// The device asked for.
        device: String,
        /// The IPSW's build.
        build: String,
        /// Chip/board/class of every identity present.
        available: Vec<String>,
    },
    /// The device fits but not with this behavior.
    #[error("no {behavior} build identity for {device}; available: {available:?}")]
    NoIdentityForBehavior {
        /// The device asked for.
        device: String,
        /// The behavior asked for.
        behavior: RestoreBehavior,
        /// Behaviors present for this device.
        available: Vec<RestoreBehavior>,
    },
    /// Not a zip, or a zip cut short.
    #[error("{} is not a complete zip: {reason}", path.display())]
    Zip {
        /// The archive.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// A member name that would escape the extraction folder or is otherwise unsafe.
    #[error("unsafe member name {name:?} (absolute, `..`, backslash or NUL)")]
    UnsafeMemberName {
        /// The name.
        name: String,
    },
    /// Two members with one name.
    #[error("member {name:?} appears twice in the archive")]
    DuplicateMember {
        /// The name.
        name: String,
    },
    /// Two members whose data overlap (a zip-bomb technique).
    #[error("members {first:?} and {second:?} overlap in the archive")]
    OverlappingMembers {
        /// One member.
        first: String,
        /// The other.
        second: String,
    },
    /// A compression ratio no real firmware has.
    #[error("member {name:?}: {compressed} compressed bytes expand to {uncompressed} (ratio above {limit}:1), refusing (zip bomb?)")]
    CompressionRatio {
        /// The member.
        name: String,
        /// Compressed size.
        compressed: u64,
        /// Declared or actual uncompressed size.
        uncompressed: u64,
        /// The limit.
        limit: u64,
    },
    /// A compression method other than stored/deflate, or encryption.
    #[error("member {name:?}: unsupported compression method {method} or encryption")]
    UnsupportedMember {
        /// The member.
        name: String,
        /// The method.
        method: u16,
    },
    /// Deflate data that does not inflate or does not match the declared sizes.
    #[error("member {name:?}: {reason}")]
    MemberData {
        /// The member.
        name: String,
        /// What was wrong.
        reason: String,
    },
    /// The CRC-32 of a member differs from the central directory's.
    #[error("member {name:?}: CRC-32 {actual:08x}, central directory says {expected:08x}")]
    Crc {
        /// The member.
        name: String,
        /// Declared.
        expected: u32,
        /// Computed.
        actual: u32,
    },
    /// A member the code needs (e.g. BuildManifest.plist) is absent.
    #[error("the archive has no member {name:?}")]
    NoSuchMember {
        /// The name.
        name: String,
    },
    /// A member too large to read into memory (manifests only).
    #[error("member {name:?} is {size} bytes, more than the {limit} allowed for it")]
    MemberTooLarge {
        /// The member.
        name: String,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The manifest names a member the archive lacks.
    #[error("component {component} names {path:?}, which is not in the archive")]
    MissingMember {
        /// The component.
        component: String,
        /// The missing path.
        path: String,
    },
    /// A component digest does not match its member.
    #[error(
        "component {component} ({path}): {algorithm} digest is {actual}, manifest says {expected}"
    )]
    ComponentDigest {
        /// The component.
        component: String,
        /// Its member.
        path: String,
        /// The algorithm.
        algorithm: Algorithm,
        /// From the manifest.
        expected: Digest,
        /// Computed.
        actual: Digest,
    },
    /// The whole file's hash is not the one given.
    #[error("whole-file {algorithm} is {actual}, expected {expected}")]
    WholeFileHash {
        /// The algorithm.
        algorithm: Algorithm,
        /// Given.
        expected: Digest,
        /// Computed.
        actual: Digest,
    },
    /// The source changed while it was being staged.
    #[error("{} changed while it was being staged", path.display())]
    SourceChanged {
        /// The source.
        path: PathBuf,
    },
    /// Malformed IM4P DER.
    #[error("IM4P: {reason} at byte {offset}")]
    Im4p {
        /// What was wrong.
        reason: &'static str,
        /// Where.
        offset: usize,
    },
    /// Could not reach or read from a URL.
    #[error("download {url}: {reason}")]
    Download {
        /// The URL.
        url: String,
        /// What failed.
        reason: String,
    },
    /// The server answered with an error status.
    #[error("download {url}: HTTP {status}")]
    HttpStatus {
        /// The URL.
        url: String,
        /// The status.
        status: u16,
    },
    /// No staged IPSW has this id.
    #[error("no staged IPSW matches {id:?}")]
    NotStaged {
        /// The id or prefix.
        id: String,
    },
    /// An id prefix that matches several staged IPSWs.
    #[error("{id:?} matches several staged IPSWs: {}", matches.join(", "))]
    AmbiguousId {
        /// The prefix.
        id: String,
        /// The matches.
        matches: Vec<String>,
    },
    /// A store sidecar that does not parse.
    #[error("store record {} does not parse", path.display())]
    Sidecar {
        /// The sidecar.
        path: PathBuf,
        /// The parser's word.
        source: serde_json::Error,
    },
    /// A `--profile` the synthesizer does not know.
    #[error("no synthetic profile for {product_type:?}; known: {}", known.join(", "))]
    UnknownProfile {
        /// Asked for.
        product_type: String,
        /// Known product types.
        known: Vec<String>,
    },
    /// A size like `64M` that does not parse.
    #[error("{text:?} is not a size (e.g. 4096, 64K, 64M, 2G)")]
    Size {
        /// The text.
        text: String,
    },
}

impl Error {
    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { op, path, source }
    }
}
