//! iBoot commands as the phone reads them from a vendor control OUT (`0x40`): ASCII text up to
//! the first NUL, a command word, arguments separated by spaces.
//!
//! ```
//! use sim::command::Command;
//!
//! assert_eq!(Command::parse(b"bgcolor 255 0 128\0")?, Command::Bgcolor(255, 0, 128));
//! let c = Command::parse(b"setenv boot-args rd=md0 -progress\0")?;
//! assert_eq!(c, Command::Setenv { name: "boot-args".into(), value: "rd=md0 -progress".into() });
//! assert_eq!(c.to_string(), "setenv boot-args rd=md0 -progress");
//! # Ok::<(), sim::command::CommandError>(())
//! ```

use std::fmt;

/// iBoot's command buffer: 256 bytes with the NUL.
pub const MAX_COMMAND_LENGTH: usize = 255;

/// A command iBoot knows (or an unknown word, which it answers with "Command not found").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `getenv NAME`: the value is read next with a control IN `0xC0`.
    Getenv(String),
    /// `setenv NAME VALUE…` (the value may contain spaces, may be empty).
    Setenv {
        /// Variable.
        name: String,
        /// Value.
        value: String,
    },
    /// `saveenv`: write the environment to NVRAM.
    Saveenv,
    /// `bgcolor R G B`: paint the screen.
    Bgcolor(u8, u8, u8),
    /// `setpicture N`: show the uploaded picture (or hide it with 0).
    Setpicture(u32),
    /// `go`: jump to the uploaded image (iBEC after iBSS).
    Go,
    /// `bootx`: boot the uploaded kernelcache with the ramdisk and device tree.
    Bootx,
    /// `reboot`.
    Reboot,
    /// `reset` (same as reboot).
    Reset,
    /// `ramdisk`: the upload is the restore ramdisk.
    Ramdisk,
    /// `devicetree`: the upload is the device tree.
    Devicetree,
    /// `firmware`: the upload is a firmware image loaded by iBoot.
    Firmware,
    /// `rsepfirmware`: the upload is the restore SEP firmware.
    Rsepfirmware,
    /// Anything else.
    Unknown {
        /// The first word.
        word: String,
        /// The rest, trimmed.
        args: String,
    },
}

/// Bytes that are not a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// Nothing before the NUL.
    #[error("empty command")]
    Empty,
    /// More than iBoot's buffer holds.
    #[error("command of {length} bytes; iBoot takes at most {MAX_COMMAND_LENGTH}")]
    TooLong {
        /// Bytes before the NUL.
        length: usize,
    },
    /// Not text.
    #[error("command is not text (invalid UTF-8 at byte {position})")]
    NotText {
        /// Offset of the first bad byte.
        position: usize,
    },
    /// A required argument is missing.
    #[error("{command}: missing {what}")]
    Missing {
        /// The command word.
        command: &'static str,
        /// What was expected.
        what: &'static str,
    },
    /// An argument that should be a number is not.
    #[error("{command}: {text:?} is not a number in range")]
    BadNumber {
        /// The command word.
        command: &'static str,
        /// What came (cut to 32 characters).
        text: String,
    },
}

fn split_word(text: &str) -> (&str, &str) {
    match text.split_once(' ') {
        Some((w, rest)) => (w, rest.trim_start_matches(' ')),
        None => (text, ""),
    }
}

fn number<T: std::str::FromStr>(command: &'static str, text: &str) -> Result<T, CommandError> {
    let bad = || CommandError::BadNumber {
        command,
        text: text.chars().take(32).collect(),
    };
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    text.parse().map_err(|_| bad())
}

impl Command {
    /// Reads a command from the data stage of a `0x40` control transfer.
    pub fn parse(data: &[u8]) -> Result<Command, CommandError> {
        let end = data.iter().position(|&b| b == 0).unwrap_or(data.len());
        let bytes = data.get(..end).unwrap_or_default();
        if bytes.len() > MAX_COMMAND_LENGTH {
            return Err(CommandError::TooLong {
                length: bytes.len(),
            });
        }
        let text = std::str::from_utf8(bytes).map_err(|e| CommandError::NotText {
            position: e.valid_up_to(),
        })?;
        let text = text.trim_matches(' ');
        if text.is_empty() {
            return Err(CommandError::Empty);
        }
        let (word, args) = split_word(text);
        Ok(match word {
            "getenv" => {
                let (name, _) = split_word(args);
                if name.is_empty() {
                    return Err(CommandError::Missing {
                        command: "getenv",
                        what: "variable name",
                    });
                }
                Command::Getenv(name.to_string())
            }
            "setenv" => {
                let (name, value) = split_word(args);
                if name.is_empty() {
                    return Err(CommandError::Missing {
                        command: "setenv",
                        what: "variable name",
                    });
                }
                Command::Setenv {
                    name: name.to_string(),
                    value: value.to_string(),
                }
            }
            "saveenv" => Command::Saveenv,
            "bgcolor" => {
                let mut it = args.split(' ').filter(|s| !s.is_empty());
                let mut next = || {
                    it.next().ok_or(CommandError::Missing {
                        command: "bgcolor",
                        what: "R G B",
                    })
                };
                let (r, g, b) = (next()?, next()?, next()?);
                Command::Bgcolor(
                    number("bgcolor", r)?,
                    number("bgcolor", g)?,
                    number("bgcolor", b)?,
                )
            }
            "setpicture" => {
                let (n, _) = split_word(args);
                if n.is_empty() {
                    return Err(CommandError::Missing {
                        command: "setpicture",
                        what: "picture number",
                    });
                }
                Command::Setpicture(number("setpicture", n)?)
            }
            "go" => Command::Go,
            "bootx" => Command::Bootx,
            "reboot" => Command::Reboot,
            "reset" => Command::Reset,
            "ramdisk" => Command::Ramdisk,
            "devicetree" => Command::Devicetree,
            "firmware" => Command::Firmware,
            "rsepfirmware" => Command::Rsepfirmware,
            other => Command::Unknown {
                word: other.to_string(),
                args: args.to_string(),
            },
        })
    }

    /// The command word.
    pub fn word(&self) -> &str {
        match self {
            Command::Getenv(_) => "getenv",
            Command::Setenv { .. } => "setenv",
            Command::Saveenv => "saveenv",
            Command::Bgcolor(..) => "bgcolor",
            Command::Setpicture(_) => "setpicture",
            Command::Go => "go",
            Command::Bootx => "bootx",
            Command::Reboot => "reboot",
            Command::Reset => "reset",
            Command::Ramdisk => "ramdisk",
            Command::Devicetree => "devicetree",
            Command::Firmware => "firmware",
            Command::Rsepfirmware => "rsepfirmware",
            Command::Unknown { word, .. } => word,
        }
    }

    /// Whether the command consumes the pending upload.
    pub fn consumes_upload(&self) -> bool {
        matches!(
            self,
            Command::Go
                | Command::Bootx
                | Command::Ramdisk
                | Command::Devicetree
                | Command::Firmware
                | Command::Rsepfirmware
        )
    }
}

/// The canonical text (what a host would send, without the NUL).
impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Getenv(name) => write!(f, "getenv {name}"),
            Command::Setenv { name, value } if value.is_empty() => write!(f, "setenv {name}"),
            Command::Setenv { name, value } => write!(f, "setenv {name} {value}"),
            Command::Bgcolor(r, g, b) => write!(f, "bgcolor {r} {g} {b}"),
            Command::Setpicture(n) => write!(f, "setpicture {n}"),
            Command::Unknown { word, args } if args.is_empty() => f.write_str(word),
            Command::Unknown { word, args } => write!(f, "{word} {args}"),
            other => f.write_str(other.word()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_of_a_restore() {
        let cases: [(&[u8], Command); 8] = [
            (
                b"setenv auto-boot false\0",
                Command::Setenv {
                    name: "auto-boot".into(),
                    value: "false".into(),
                },
            ),
            (b"saveenv\0", Command::Saveenv),
            (
                b"getenv build-version\0garbage",
                Command::Getenv("build-version".into()),
            ),
            (b"setpicture 4\0", Command::Setpicture(4)),
            (b"go\0", Command::Go),
            (b"bootx", Command::Bootx),
            (b"  ramdisk  \0", Command::Ramdisk),
            (
                b"frobnicate now\0",
                Command::Unknown {
                    word: "frobnicate".into(),
                    args: "now".into(),
                },
            ),
        ];
        for (bytes, want) in cases {
            let got = Command::parse(bytes).unwrap();
            assert_eq!(got, want);
            assert_eq!(Command::parse(got.to_string().as_bytes()).unwrap(), want);
        }
        assert!(Command::Go.consumes_upload() && !Command::Saveenv.consumes_upload());
    }

    #[test]
    fn bad_commands_are_typed_errors() {
        assert_eq!(Command::parse(b"\0"), Err(CommandError::Empty));
        assert_eq!(Command::parse(b"   "), Err(CommandError::Empty));
        assert!(matches!(
            Command::parse(b"bgcolor 256 0 0"),
            Err(CommandError::BadNumber { .. })
        ));
        assert!(matches!(
            Command::parse(b"bgcolor 1 2"),
            Err(CommandError::Missing { .. })
        ));
        assert!(matches!(
            Command::parse(b"bgcolor -1 2 3"),
            Err(CommandError::BadNumber { .. })
        ));
        assert!(matches!(
            Command::parse(b"getenv"),
            Err(CommandError::Missing { .. })
        ));
        assert!(matches!(
            Command::parse(&[b'a'; 300]),
            Err(CommandError::TooLong { length: 300 })
        ));
        assert!(matches!(
            Command::parse(b"go \xff"),
            Err(CommandError::NotText { position: 3 })
        ));
    }
}
