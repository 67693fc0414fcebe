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

/// Any bytes cut by the ASR framing: every plist that decodes re-encodes to one frame that
/// decodes again to the same bytes, raw runs come out exactly as long as asked, and nothing
/// panics. (A re-encoded plist the `plist` crate cannot read back is its limit, not a framing
/// bug, and is skipped.)
pub fn asr_plist(data: &[u8]) {
    use crate::asr::{encode, AsrError, AsrReader, END_LINE};
    let mut reader = AsrReader::new();
    // The first byte picks how many raw bytes to take after each plist.
    let (raw, data) = match data.split_first() {
        Some((r, d)) => (usize::from(*r), d),
        None => return,
    };
    reader.push(data);
    for _ in 0..64 {
        match reader.next_plist() {
            Ok(Some(dict)) => {
                let Ok(wire) = encode(&dict) else { continue };
                assert!(
                    wire.ends_with(END_LINE),
                    "encoded ASR plist must end its line"
                );
                let mut again = AsrReader::new();
                again.push(&wire);
                match again.next_plist() {
                    Ok(Some(back)) => {
                        assert_eq!(again.buffered(), 0, "one frame, nothing left");
                        let rewire = encode(&back).ok();
                        assert_eq!(rewire.as_deref(), Some(&wire[..]), "idempotent framing");
                    }
                    Ok(None) => panic!("a re-encoded plist must be one whole frame"),
                    Err(AsrError::TooLong { .. }) => {
                        assert!(wire.len() > crate::asr::MAX_PLIST_LEN)
                    }
                    Err(_) => {}
                }
                let before = reader.buffered();
                match reader.take(raw) {
                    Some(bytes) => {
                        assert_eq!(bytes.len(), raw);
                        assert_eq!(reader.buffered(), before - raw);
                    }
                    None => assert!(before < raw),
                }
            }
            Ok(None) | Err(_) => return,
        }
    }
}

/// Any bytes from the host to the phone's ASR sink, in two pieces: the sink either keeps
/// going or reports a failure; it never panics, and never counts more image bytes than the
/// size it was announced.
pub fn asr_sink(data: &[u8]) {
    let mut sink = crate::asr::AsrSink::new();
    let _ = sink.take_output();
    let (a, b) = data.split_at(data.len() / 2);
    let r = sink.handle_input(a).and_then(|()| sink.handle_input(b));
    if let Some(size) = sink.size() {
        assert!(sink.received() <= size);
    }
    if r.is_ok() {
        let _ = sink.closed();
    }
}

/// Any bytes through the USB/IP decoders. The first byte picks the stream: 0 operation
/// requests, 1 operation replies, 2 URB commands, anything else URB replies (odd sequence
/// numbers are IN, even ones OUT). Every message that decodes re-encodes to bytes that decode
/// to the same message, whole; a decoder never claims more bytes than it had; nothing panics.
pub fn usbip_wire(data: &[u8]) {
    use crate::usbip::wire::{Command, OpReply, OpRequest, Return, WireError};
    use usb::Direction;

    fn run<T: PartialEq + std::fmt::Debug>(
        mut data: &[u8],
        decode: impl Fn(&[u8]) -> Result<Option<(T, usize)>, WireError>,
        encode: impl Fn(&T, &mut Vec<u8>) -> Result<(), WireError>,
    ) {
        for _ in 0..64 {
            let Ok(Some((message, used))) = decode(data) else {
                return;
            };
            assert!(
                used > 0 && used <= data.len(),
                "claimed {used} of {}",
                data.len()
            );
            let mut again = Vec::new();
            match encode(&message, &mut again) {
                Ok(()) => match decode(&again) {
                    Ok(Some((back, n))) => {
                        assert_eq!(back, message, "round trip");
                        assert_eq!(n, again.len(), "one whole message");
                    }
                    other => panic!("re-encoded {message:?} decodes as {other:?}"),
                },
                Err(e) => panic!("decoded {message:?} does not encode: {e}"),
            }
            data = data.get(used..).unwrap_or_default();
        }
    }

    let Some((&selector, data)) = data.split_first() else {
        return;
    };
    let direction = |seqnum: u32| {
        Some(if seqnum % 2 == 1 {
            Direction::In
        } else {
            Direction::Out
        })
    };
    match selector {
        0 => run(data, OpRequest::decode, OpRequest::encode),
        1 => run(data, OpReply::decode, OpReply::encode),
        2 => run(data, Command::decode, Command::encode),
        _ => run(data, |b| Return::decode(b, direction), Return::encode),
    }
}
