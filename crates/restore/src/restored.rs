//! restored's message loop, host side: what the restore ramdisk says after `StartRestore`,
//! typed, and the answers the host owes it.
//!
//! restored speaks lockdown's framing (4-byte length + plist) on port 62078. After
//! `StartRestore` it drives: `DataRequestMsg` asks for one [`DataType`] (answered with a
//! dictionary holding [`DataType::reply_key`], or, for the OS image, by streaming it over ASR
//! on port 12345); `ProgressMsg` reports an [`operation`] and a percentage; `StatusMsg` is
//! the final word (`Status` 0 is success; `AMRError` carries more), which the host
//! acknowledges with `ReceivedFinalStatusMsg`. A data type this host does not know is
//! surfaced as [`Message::DataRequest`] with [`DataType::Other`], never silently ignored.

use std::fmt;

use plist::{Dictionary, Value};
use serde::Serialize;

/// `Operation` numbers of `ProgressMsg` (the ones this project acts on or shows).
pub mod operation {
    /// Creating the partition map.
    pub const CREATE_PARTITION_MAP: u64 = 11;
    /// Creating the filesystem.
    pub const CREATE_FILESYSTEM: u64 = 12;
    /// Restoring the OS image (ASR).
    pub const RESTORE_IMAGE: u64 = 13;
    /// Verifying the restore.
    pub const VERIFY_RESTORE: u64 = 14;
    /// Flashing firmware (NOR).
    pub const FLASH_FIRMWARE: u64 = 18;
    /// Updating the baseband.
    pub const UPDATE_BASEBAND: u64 = 19;

    /// A technician's name for `operation`.
    pub fn describe(operation: u64) -> &'static str {
        match operation {
            CREATE_PARTITION_MAP => "creating the partition map",
            CREATE_FILESYSTEM => "creating the file system",
            RESTORE_IMAGE => "restoring the system image",
            VERIFY_RESTORE => "verifying the restore",
            FLASH_FIRMWARE => "flashing firmware",
            UPDATE_BASEBAND => "updating the baseband",
            _ => "restoring",
        }
    }
}

/// What restored asks the host for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub enum DataType {
    /// The personalized root ticket (IM4M).
    RootTicket,
    /// The OS image, over ASR.
    SystemImageData,
    /// The kernelcache.
    KernelCache,
    /// The device tree.
    DeviceTree,
    /// LLB, iBoot, logos... for the NOR.
    NorData,
    /// The baseband firmware (cellular phones).
    BasebandData,
    /// FDR trust objects (phones with a SEP).
    FdrTrustData,
    /// A data type this host does not serve (reported to the operator, never ignored).
    Other(String),
}

impl DataType {
    /// The data types this host serves.
    pub const KNOWN: [DataType; 7] = [
        DataType::RootTicket,
        DataType::SystemImageData,
        DataType::KernelCache,
        DataType::DeviceTree,
        DataType::NorData,
        DataType::BasebandData,
        DataType::FdrTrustData,
    ];

    /// `DataType` on the wire.
    pub fn name(&self) -> &str {
        match self {
            DataType::RootTicket => "RootTicket",
            DataType::SystemImageData => "SystemImageData",
            DataType::KernelCache => "KernelCache",
            DataType::DeviceTree => "DeviceTree",
            DataType::NorData => "NORData",
            DataType::BasebandData => "BasebandData",
            DataType::FdrTrustData => "FDRTrustData",
            DataType::Other(name) => name,
        }
    }

    /// The key of the host's answer that carries the data (`None`: the answer may be empty,
    /// or the data goes over ASR).
    pub fn reply_key(&self) -> Option<&'static str> {
        match self {
            DataType::RootTicket => Some("RootTicketData"),
            DataType::KernelCache => Some("KernelCacheFile"),
            DataType::DeviceTree => Some("DeviceTreeFile"),
            DataType::NorData => Some("LlbImageData"),
            DataType::BasebandData => Some("BasebandData"),
            DataType::SystemImageData | DataType::FdrTrustData | DataType::Other(_) => None,
        }
    }

    /// By wire name; unknown names are [`DataType::Other`].
    pub fn from_name(name: &str) -> DataType {
        DataType::KNOWN
            .into_iter()
            .find(|d| d.name() == name)
            .unwrap_or_else(|| DataType::Other(name.chars().take(128).collect()))
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One message of restored's loop.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// `DataRequestMsg`.
    DataRequest {
        /// What is asked.
        data_type: DataType,
        /// The whole message (some types carry arguments).
        fields: Dictionary,
    },
    /// `ProgressMsg`.
    Progress {
        /// `Operation`.
        operation: u64,
        /// `Progress` (percent; -1 when unknown).
        progress: i64,
    },
    /// `StatusMsg`: the restore is over.
    Status {
        /// `Status`: 0 is success.
        status: i64,
        /// `AMRError`, when present.
        amr_error: Option<i64>,
        /// `Log`, when present (the device's last lines).
        log: Option<String>,
    },
    /// `CheckpointMsg`.
    Checkpoint {
        /// `CHECKPOINT_ID`, when present.
        id: Option<u64>,
        /// `CHECKPOINT_RESULT`, when present (non-zero is a failure being reported).
        result: Option<i64>,
    },
    /// `PreviousRestoreLogMsg`: the log of an earlier restore, kept as evidence.
    PreviousRestoreLog(String),
    /// `RestoredCrash`: restored itself crashed.
    Crash(Dictionary),
    /// Any other `MsgType`, verbatim.
    Other {
        /// `MsgType`.
        msg_type: String,
        /// The message.
        fields: Dictionary,
    },
}

/// A message that is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RestoredError {
    /// No `MsgType`.
    #[error("restored sent a message without MsgType (keys: {keys})")]
    NoMsgType {
        /// The keys it had.
        keys: String,
    },
    /// A required field is absent or of the wrong type.
    #[error("restored's {msg_type} has no usable {field}")]
    Field {
        /// The message.
        msg_type: &'static str,
        /// The field.
        field: &'static str,
    },
}

fn int(d: &Dictionary, key: &str) -> Option<i64> {
    match d.get(key)? {
        Value::Integer(i) => i.as_signed().or_else(|| i.as_unsigned().map(|u| u as i64)),
        Value::Real(r) => Some(*r as i64),
        _ => None,
    }
}

impl Message {
    /// Reads one message.
    pub fn parse(d: Dictionary) -> Result<Message, RestoredError> {
        let Some(msg_type) = d.get("MsgType").and_then(Value::as_string) else {
            let keys: Vec<&str> = d.keys().map(String::as_str).take(16).collect();
            return Err(RestoredError::NoMsgType {
                keys: keys.join(", "),
            });
        };
        Ok(match msg_type {
            "DataRequestMsg" => {
                let name =
                    d.get("DataType")
                        .and_then(Value::as_string)
                        .ok_or(RestoredError::Field {
                            msg_type: "DataRequestMsg",
                            field: "DataType",
                        })?;
                Message::DataRequest {
                    data_type: DataType::from_name(name),
                    fields: d.clone(),
                }
            }
            "ProgressMsg" => Message::Progress {
                operation: int(&d, "Operation")
                    .and_then(|o| u64::try_from(o).ok())
                    .ok_or(RestoredError::Field {
                        msg_type: "ProgressMsg",
                        field: "Operation",
                    })?,
                progress: int(&d, "Progress").unwrap_or(-1),
            },
            "StatusMsg" => Message::Status {
                status: int(&d, "Status").ok_or(RestoredError::Field {
                    msg_type: "StatusMsg",
                    field: "Status",
                })?,
                amr_error: int(&d, "AMRError"),
                log: d
                    .get("Log")
                    .and_then(Value::as_string)
                    .map(|s| s.chars().take(64 * 1024).collect()),
            },
            "CheckpointMsg" => Message::Checkpoint {
                id: int(&d, "CHECKPOINT_ID").and_then(|i| u64::try_from(i).ok()),
                result: int(&d, "CHECKPOINT_RESULT"),
            },
            "PreviousRestoreLogMsg" => Message::PreviousRestoreLog(
                d.get("PreviousRestoreLog")
                    .and_then(Value::as_string)
                    .unwrap_or_default()
                    .chars()
                    .take(256 * 1024)
                    .collect(),
            ),
            "RestoredCrash" => Message::Crash(d.clone()),
            other => Message::Other {
                msg_type: other.chars().take(128).collect(),
                fields: d.clone(),
            },
        })
    }

    /// The message as restored sends it (the virtual phone's side, and tests).
    pub fn to_dictionary(&self) -> Dictionary {
        let mut d = Dictionary::new();
        let mut put = |k: &str, v: Value| {
            d.insert(k.into(), v);
        };
        match self {
            Message::DataRequest { data_type, fields } => {
                for (k, v) in fields {
                    put(k, v.clone());
                }
                put("MsgType", "DataRequestMsg".into());
                put("DataType", data_type.name().into());
            }
            Message::Progress {
                operation,
                progress,
            } => {
                put("MsgType", "ProgressMsg".into());
                put("Operation", Value::from(*operation));
                put("Progress", Value::from(*progress));
            }
            Message::Status {
                status,
                amr_error,
                log,
            } => {
                put("MsgType", "StatusMsg".into());
                put("Status", Value::from(*status));
                if let Some(a) = amr_error {
                    put("AMRError", Value::from(*a));
                }
                if let Some(l) = log {
                    put("Log", Value::from(l.as_str()));
                }
            }
            Message::Checkpoint { id, result } => {
                put("MsgType", "CheckpointMsg".into());
                if let Some(i) = id {
                    put("CHECKPOINT_ID", Value::from(*i));
                }
                if let Some(r) = result {
                    put("CHECKPOINT_RESULT", Value::from(*r));
                }
            }
            Message::PreviousRestoreLog(log) => {
                put("MsgType", "PreviousRestoreLogMsg".into());
                put("PreviousRestoreLog", Value::from(log.as_str()));
            }
            Message::Crash(fields) | Message::Other { fields, .. } => {
                for (k, v) in fields {
                    put(k, v.clone());
                }
                if let Message::Other { msg_type, .. } = self {
                    put("MsgType", Value::from(msg_type.as_str()));
                } else {
                    put("MsgType", "RestoredCrash".into());
                }
            }
        }
        d
    }
}

/// The host's answer to a `DataRequestMsg` for `data_type` carrying `data` (for the types
/// with a [`DataType::reply_key`]); an empty dictionary for the others.
pub fn data_reply(data_type: &DataType, data: Vec<u8>) -> Dictionary {
    let mut d = Dictionary::new();
    if let Some(key) = data_type.reply_key() {
        d.insert(key.into(), Value::Data(data));
    }
    d
}

/// The host's acknowledgement of the final `StatusMsg`.
pub fn received_final_status() -> Dictionary {
    let mut d = Dictionary::new();
    d.insert("MsgType".into(), "ReceivedFinalStatusMsg".into());
    d
}

/// The raw `BuildIdentities` entry of `manifest` (BuildManifest.plist's bytes) that is
/// `identity`: restored wants it verbatim in `RestoreOptions.BuildIdentityDict`.
pub fn identity_dict(
    manifest: &[u8],
    identity: &ipsw::manifest::BuildIdentity,
) -> Option<Dictionary> {
    let root = Value::from_reader(std::io::Cursor::new(manifest)).ok()?;
    let hex = |d: &Dictionary, k: &str| {
        d.get(k).and_then(|v| match v {
            Value::String(s) => ipsw::manifest::parse_int(s),
            Value::Integer(i) => i.as_unsigned(),
            _ => None,
        })
    };
    root.as_dictionary()?
        .get("BuildIdentities")?
        .as_array()?
        .iter()
        .filter_map(Value::as_dictionary)
        .find(|d| {
            let info = d.get("Info").and_then(Value::as_dictionary);
            let text = |k: &str| info.and_then(|i| i.get(k)).and_then(Value::as_string);
            hex(d, "ApChipID") == Some(u64::from(identity.ap_chip_id))
                && hex(d, "ApBoardID") == Some(u64::from(identity.ap_board_id))
                && text("RestoreBehavior") == Some(identity.info.restore_behavior.as_str())
                && text("Variant") == Some(identity.info.variant.as_str())
        })
        .cloned()
}

/// `RestoreOptions` for `StartRestore`: the keys the references send, the build identity
/// verbatim, and `ProductVersion` (the virtual phone reads it to report the new iOS).
pub fn restore_options(
    identity: Dictionary,
    product_version: &str,
    behavior: ipsw::manifest::RestoreBehavior,
    update_baseband: bool,
    uuid: &str,
) -> Dictionary {
    let erase = behavior == ipsw::manifest::RestoreBehavior::Erase;
    let mut d = Dictionary::new();
    let mut put = |k: &str, v: Value| {
        d.insert(k.into(), v);
    };
    put("AutoBootDelay", Value::from(0u64));
    put("BootImageType", "UserOrInternal".into());
    put("BuildIdentityDict", Value::Dictionary(identity));
    put("CreateFilesystemPartitions", erase.into());
    put("DFUFileType", "RELEASE".into());
    put("DataImage", false.into());
    put("FirmwareDirectory", ".".into());
    put("FlashNOR", true.into());
    put("KernelCacheType", "Release".into());
    put("NORImageType", "production".into());
    put("PersonalizedDuringPreflight", true.into());
    put("ProductVersion", product_version.into());
    put("RestoreBundlePath", "/tmp/Per2.tmp".into());
    put("RootToInstall", false.into());
    put("SystemImage", true.into());
    put("SystemImageType", "User".into());
    put("UUID", uuid.into());
    put("UpdateBaseband", update_baseband.into());
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn message() -> impl Strategy<Value = Message> {
        prop_oneof![
            (0usize..7).prop_map(|i| Message::DataRequest {
                data_type: DataType::KNOWN[i].clone(),
                fields: Dictionary::new(),
            }),
            "[A-Za-z]{1,20}".prop_map(|n| Message::DataRequest {
                data_type: DataType::from_name(&n),
                fields: Dictionary::new(),
            }),
            (0u64..100, -1i64..=100).prop_map(|(operation, progress)| Message::Progress {
                operation,
                progress
            }),
            (
                any::<i32>(),
                proptest::option::of(any::<i32>()),
                proptest::option::of(".{0,40}")
            )
                .prop_map(|(s, a, log)| Message::Status {
                    status: i64::from(s),
                    amr_error: a.map(i64::from),
                    log,
                }),
            (
                proptest::option::of(0u64..1000),
                proptest::option::of(-5i64..5)
            )
                .prop_map(|(id, result)| Message::Checkpoint { id, result }),
            ".{0,40}".prop_map(Message::PreviousRestoreLog),
        ]
    }

    fn fill_fields(m: Message) -> Message {
        // A parsed data request keeps the whole message as its fields.
        match m {
            Message::DataRequest { data_type, .. } => {
                let d = Message::DataRequest {
                    data_type: data_type.clone(),
                    fields: Dictionary::new(),
                }
                .to_dictionary();
                Message::DataRequest {
                    data_type,
                    fields: d,
                }
            }
            other => other,
        }
    }

    proptest! {
        #[test]
        fn messages_round_trip(m in message()) {
            let m = fill_fields(m);
            prop_assert_eq!(Message::parse(m.to_dictionary()).unwrap(), m);
        }
    }

    #[test]
    fn restore_options_carry_the_identity_and_the_behavior() {
        let mut identity = Dictionary::new();
        identity.insert("ApChipID".into(), "0x8110".into());
        let o = restore_options(
            identity.clone(),
            "15.4.1",
            ipsw::manifest::RestoreBehavior::Update,
            false,
            "00000000-0000-0000-0000-000000000001",
        );
        assert_eq!(
            o.get("BuildIdentityDict"),
            Some(&Value::Dictionary(identity))
        );
        assert_eq!(
            o.get("CreateFilesystemPartitions"),
            Some(&Value::from(false))
        );
        assert_eq!(
            o.get("ProductVersion").and_then(Value::as_string),
            Some("15.4.1")
        );
    }

    #[test]
    fn unknown_data_types_are_named_not_dropped() {
        let mut d = Dictionary::new();
        d.insert("MsgType".into(), "DataRequestMsg".into());
        d.insert("DataType".into(), "URLAsset".into());
        let Message::DataRequest { data_type, .. } = Message::parse(d).unwrap() else {
            panic!("not a data request");
        };
        assert_eq!(data_type, DataType::Other("URLAsset".into()));
        assert_eq!(data_type.reply_key(), None);
    }

    #[test]
    fn malformed_messages_are_typed_errors() {
        assert!(matches!(
            Message::parse(Dictionary::new()),
            Err(RestoredError::NoMsgType { .. })
        ));
        let mut d = Dictionary::new();
        d.insert("MsgType".into(), "StatusMsg".into());
        d.insert("Status".into(), "zero".into());
        assert_eq!(
            Message::parse(d),
            Err(RestoredError::Field {
                msg_type: "StatusMsg",
                field: "Status"
            })
        );
    }

    #[test]
    fn replies_carry_the_data_under_the_key_restored_reads() {
        let r = data_reply(&DataType::KernelCache, vec![1, 2, 3]);
        assert_eq!(r.get("KernelCacheFile"), Some(&Value::Data(vec![1, 2, 3])));
        assert!(data_reply(&DataType::SystemImageData, vec![1]).is_empty());
        assert_eq!(
            received_final_status()
                .get("MsgType")
                .and_then(Value::as_string),
            Some("ReceivedFinalStatusMsg")
        );
    }
}
