//! Property tests of the iBoot command codec: every command prints in a form that parses back
//! to the same command, and any bytes are either a command or a typed error.

use proptest::prelude::*;
use sim::command::Command;

const KNOWN: [&str; 13] = [
    "getenv",
    "setenv",
    "saveenv",
    "bgcolor",
    "setpicture",
    "go",
    "bootx",
    "reboot",
    "reset",
    "ramdisk",
    "devicetree",
    "firmware",
    "rsepfirmware",
];

fn word() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9_.-]{0,15}"
}

/// Printable ASCII without leading or trailing spaces (iBoot trims the line).
fn value() -> impl Strategy<Value = String> {
    "[!-~]([ -~]{0,38}[!-~])?|"
}

fn command() -> impl Strategy<Value = Command> {
    prop_oneof![
        word().prop_map(Command::Getenv),
        (word(), value()).prop_map(|(name, value)| Command::Setenv { name, value }),
        Just(Command::Saveenv),
        any::<(u8, u8, u8)>().prop_map(|(r, g, b)| Command::Bgcolor(r, g, b)),
        any::<u32>().prop_map(Command::Setpicture),
        Just(Command::Go),
        Just(Command::Bootx),
        Just(Command::Reboot),
        Just(Command::Reset),
        Just(Command::Ramdisk),
        Just(Command::Devicetree),
        Just(Command::Firmware),
        Just(Command::Rsepfirmware),
        (word(), value())
            .prop_filter("not a known command", |(w, _)| !KNOWN.contains(&w.as_str()))
            .prop_map(|(word, args)| Command::Unknown { word, args }),
    ]
}

proptest! {
    #[test]
    fn command_round_trips(c in command()) {
        let mut wire = c.to_string().into_bytes();
        wire.push(0);
        prop_assert_eq!(Command::parse(&wire), Ok(c));
    }

    #[test]
    fn any_bytes_are_a_command_or_an_error(data in proptest::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(c) = Command::parse(&data) {
            prop_assert_eq!(Command::parse(c.to_string().as_bytes()), Ok(c));
        }
    }
}
