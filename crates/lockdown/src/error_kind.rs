//! The `Error` string of a lockdownd reply, as a type.
//!
//! The table below is the one place that maps wire strings to variants. It was assembled from
//! the strings that libimobiledevice's lockdown client recognises and the ones pymobiledevice3's
//! lockdown client turns into exceptions; anything else is kept verbatim in
//! [`ErrorKind::Unknown`].

use std::fmt;

macro_rules! error_kinds {
    ($( $(#[$doc:meta])* $variant:ident => $wire:literal, )*) => {
        /// What lockdownd (or restored) put in the `Error` field of a reply.
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum ErrorKind {
            $( $(#[$doc])* $variant, )*
            /// A string not in the table; the text is kept as the device sent it.
            Unknown(String),
        }

        impl ErrorKind {
            /// Every known kind with its wire string, in table order.
            pub const TABLE: &'static [(&'static str, ErrorKind)] = &[
                $( ($wire, ErrorKind::$variant), )*
            ];

            /// The string as it travels in the `Error` field.
            pub fn as_str(&self) -> &str {
                match self {
                    $( ErrorKind::$variant => $wire, )*
                    ErrorKind::Unknown(text) => text,
                }
            }

            /// Maps a wire string to its kind; unknown strings become [`ErrorKind::Unknown`].
            pub fn from_wire(text: &str) -> ErrorKind {
                match text {
                    $( $wire => ErrorKind::$variant, )*
                    other => ErrorKind::Unknown(other.to_owned()),
                }
            }
        }
    };
}

error_kinds! {
    /// The device did not understand the reply it got from us (or our request).
    InvalidResponse => "InvalidResponse",
    /// A request lacked a key the device needs.
    MissingKey => "MissingKey",
    /// GetValue/RemoveValue named a domain or key that holds nothing.
    MissingValue => "MissingValue",
    /// The key may not be read without a (paired) session.
    GetProhibited => "GetProhibited",
    /// The key may not be written.
    SetProhibited => "SetProhibited",
    /// The key may not be removed.
    RemoveProhibited => "RemoveProhibited",
    /// The value exists but cannot be changed.
    ImmutableValue => "ImmutableValue",
    /// The phone is locked with a passcode: unlock it and retry.
    PasswordProtected => "PasswordProtected",
    /// The user tapped "Don't Trust".
    UserDeniedPairing => "UserDeniedPairing",
    /// The "Trust this computer?" dialog is showing and unanswered.
    PairingDialogResponsePending => "PairingDialogResponsePending",
    /// StartSession without a HostID.
    MissingHostID => "MissingHostID",
    /// The device does not know this HostID: not paired (any more).
    InvalidHostID => "InvalidHostID",
    /// A session is already running on this connection.
    SessionActive => "SessionActive",
    /// The request needs a session and none is running.
    SessionInactive => "SessionInactive",
    /// StopSession without a SessionID.
    MissingSessionID => "MissingSessionID",
    /// StopSession with a SessionID the device did not hand out.
    InvalidSessionID => "InvalidSessionID",
    /// StartService without a Service name.
    MissingService => "MissingService",
    /// StartService named a service the device does not have.
    InvalidService => "InvalidService",
    /// Too many instances of that service are running.
    ServiceLimit => "ServiceLimit",
    /// Pair/ValidatePair without a PairRecord.
    MissingPairRecord => "MissingPairRecord",
    /// The device could not store the pair record.
    SavePairRecordFailed => "SavePairRecordFailed",
    /// The pair record was rejected (bad certificates or keys).
    InvalidPairRecord => "InvalidPairRecord",
    /// Activate with an activation record the device refused.
    InvalidActivationRecord => "InvalidActivationRecord",
    /// Activate without an activation record.
    MissingActivationRecord => "MissingActivationRecord",
    /// The service exists but may not be started now (e.g. by policy).
    ServiceProhibited => "ServiceProhibited",
    /// The escrow keybag is locked: the phone must be unlocked once since boot.
    EscrowLocked => "EscrowLocked",
    /// Pairing is refused over this transport (e.g. Wi-Fi).
    PairingProhibitedOverThisConnection => "PairingProhibitedOverThisConnection",
    /// Find My iPhone (Activation Lock) protects the operation.
    FMiPProtected => "FMiPProtected",
    /// A configuration profile (supervision) protects the operation.
    MCProtected => "MCProtected",
    /// Supervised pairing: the device asks for a signed challenge response.
    MCChallengeRequired => "MCChallengeRequired",
    /// The connection is not allowed to do that (seen by pymobiledevice3 on StartSession).
    InvalidConnection => "InvalidConnection",
    /// The request needs a running session.
    NoRunningSession => "NoRunningSession",
}

impl ErrorKind {
    /// True for the errors a technician fixes at the phone (unlock, tap Trust), as opposed to
    /// protocol or pairing-record problems.
    pub fn needs_user(&self) -> bool {
        matches!(
            self,
            ErrorKind::PasswordProtected
                | ErrorKind::PairingDialogResponsePending
                | ErrorKind::UserDeniedPairing
                | ErrorKind::EscrowLocked
        )
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&str> for ErrorKind {
    fn from(text: &str) -> Self {
        ErrorKind::from_wire(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_round_trips_every_entry_and_has_no_duplicates() {
        let mut seen = std::collections::HashSet::new();
        for (wire, kind) in ErrorKind::TABLE {
            assert!(seen.insert(*wire), "duplicate wire string {wire}");
            assert_eq!(kind.as_str(), *wire);
            assert_eq!(&ErrorKind::from_wire(wire), kind);
        }
        assert!(ErrorKind::TABLE.len() >= 32);
    }

    #[test]
    fn unknown_keeps_text() {
        let kind = ErrorKind::from_wire("SomethingNew");
        assert_eq!(kind, ErrorKind::Unknown("SomethingNew".into()));
        assert_eq!(kind.to_string(), "SomethingNew");
        assert!(!kind.needs_user());
        assert!(ErrorKind::PasswordProtected.needs_user());
    }
}
