//! Bodies of the fuzz targets in `fuzz/`, kept here so the normal test run can replay their
//! corpora on stable.

use crate::fault::FaultSpec;

/// Any text either parses into a spec whose canonical form parses back to the same spec, or is
/// refused with an error; it never panics.
pub fn fault_spec(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(spec) = text.parse::<FaultSpec>() {
        let canonical = spec.to_string();
        let again: FaultSpec = match canonical.parse() {
            Ok(s) => s,
            Err(e) => panic!("canonical form {canonical:?} of {text:?} does not parse: {e}"),
        };
        assert_eq!(again, spec, "round trip of {text:?} via {canonical:?}");
    }
}

/// Any bytes either parse into an iBoot command whose canonical text parses back to the same
/// command, or are refused with an error; never a panic.
pub fn recovery_command(data: &[u8]) {
    use crate::command::Command;
    if let Ok(command) = Command::parse(data) {
        let text = command.to_string();
        match Command::parse(text.as_bytes()) {
            Ok(again) => assert_eq!(again, command, "canonical form {text:?}"),
            Err(e) => panic!("canonical form {text:?} of {command:?} does not parse: {e}"),
        }
    }
}
