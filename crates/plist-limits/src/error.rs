//! Why a plist was refused.

use crate::Format;

/// What [`Error::TooLarge`] ran out of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Measure {
    /// The number of values (every scalar, container and dictionary key counts one).
    Values,
    /// The bytes charged for decoded values: a fixed cost per value plus string and data bytes.
    Bytes,
}

impl std::fmt::Display for Measure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Measure::Values => "values",
            Measure::Bytes => "bytes of decoded values",
        })
    }
}

/// A plist that was refused, saying which format it was in and what was wrong.
///
/// [`Error::TooDeep`] and [`Error::TooLarge`] are limit breaches ([`Error::is_limit`]): the
/// input may be well-formed but would cost too much to hold. The others mean it is not a plist.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Containers nest deeper than the limit. Nothing deeper than the limit was built.
    #[error("{format} plist nests containers deeper than {max} levels")]
    TooDeep {
        /// The format the input was read as.
        format: Format,
        /// The depth limit.
        max: usize,
    },
    /// The decoded value would be larger than the limit (for binary plists this is usually
    /// known before parsing, from the object graph: shared references count once per use).
    #[error("{format} plist decodes to more than {max} {measure} (counted at least {found})")]
    TooLarge {
        /// The format the input was read as.
        format: Format,
        /// Which limit.
        measure: Measure,
        /// The limit.
        max: u64,
        /// How much had been counted when decoding stopped (the whole expansion, for the
        /// binary pre-check).
        found: u64,
    },
    /// The plist parser refused the input (bad XML, bad binary object, unexpected end...).
    #[error("{format} plist ({len} bytes) is malformed: {source}")]
    Parse {
        /// The format the input was read as.
        format: Format,
        /// Input length.
        len: usize,
        /// What the parser said (it carries the byte position).
        #[source]
        source: plist::Error,
    },
    /// A dictionary holds something other than a string where a key belongs.
    #[error("{format} plist dictionary has a {found} where a string key belongs")]
    KeyNotString {
        /// The format the input was read as.
        format: Format,
        /// The plist type found.
        found: &'static str,
    },
    /// A dictionary ends right after a key.
    #[error("{format} plist dictionary ends after key {key:?} without its value")]
    MissingValue {
        /// The format the input was read as.
        format: Format,
        /// The key (at most 64 characters of it).
        key: String,
    },
    /// A collection end with no collection open.
    #[error("{format} plist closes a collection that was never opened")]
    UnbalancedEnd {
        /// The format the input was read as.
        format: Format,
    },
    /// A second top-level value after the root.
    #[error("{format} plist has a second top-level {found} after its root value")]
    TrailingValue {
        /// The format the input was read as.
        format: Format,
        /// The plist type found.
        found: &'static str,
    },
    /// The input ended before the root value was complete.
    #[error("{format} plist ends before its root value is complete ({open} collections open)")]
    Unfinished {
        /// The format the input was read as.
        format: Format,
        /// Collections still open (0: no value at all).
        open: usize,
    },
    /// A kind of value this crate does not know (a newer plist crate's event).
    #[error("{format} plist holds a kind of value this decoder does not know")]
    Unsupported {
        /// The format the input was read as.
        format: Format,
    },
}

impl Error {
    /// Whether a limit was hit ([`Error::TooDeep`], [`Error::TooLarge`]) rather than the input
    /// being malformed.
    pub fn is_limit(&self) -> bool {
        matches!(self, Error::TooDeep { .. } | Error::TooLarge { .. })
    }

    /// The format the input was read as.
    pub fn format(&self) -> Format {
        match self {
            Error::TooDeep { format, .. }
            | Error::TooLarge { format, .. }
            | Error::Parse { format, .. }
            | Error::KeyNotString { format, .. }
            | Error::MissingValue { format, .. }
            | Error::UnbalancedEnd { format }
            | Error::Unsupported { format }
            | Error::TrailingValue { format, .. }
            | Error::Unfinished { format, .. } => *format,
        }
    }
}
