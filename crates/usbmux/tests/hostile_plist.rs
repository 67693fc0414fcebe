//! A peer on the usbmuxd socket sends plists built to exhaust memory or the stack. Each must
//! come back as a typed, non-fatal error for that one message, never abort the process.
//!
//! Every attack runs on a thread with an explicit 2 MiB stack (what tokio gives its workers), so
//! the result does not depend on `RUST_MIN_STACK`.

use usbmux::socket::{Header, RequestDecoder, ResponseDecoder, SocketError, DEFAULT_MAX_MESSAGE};

/// A version-1 (plist) message carrying `payload`.
fn message(payload: &[u8]) -> Vec<u8> {
    let header = Header {
        length: u32::try_from(16 + payload.len()).unwrap(),
        version: 1,
        message: 8,
        tag: 9,
    };
    let mut out = header.encode().to_vec();
    out.extend_from_slice(payload);
    out
}

/// Decodes `payload` as a request and as a response, each on a 2 MiB stack, and returns both
/// errors. A crash (stack overflow, allocation failure) aborts the test binary.
fn decode_both_ways(payload: Vec<u8>) -> [SocketError; 2] {
    assert!(
        16 + payload.len() <= DEFAULT_MAX_MESSAGE,
        "{}",
        payload.len()
    );
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || {
            let bytes = message(&payload);
            let mut requests = RequestDecoder::new();
            requests.push(&bytes);
            let request = requests.next_request().unwrap_err();
            let mut responses = ResponseDecoder::new();
            responses.push(&bytes);
            let response = responses.next_response().unwrap_err();
            // The bad message was consumed; the stream goes on.
            assert!(requests.next_request().unwrap().is_none());
            assert!(responses.next_response().unwrap().is_none());
            [request, response]
        })
        .unwrap()
        .join()
        .unwrap()
}

/// Object i (i < levels) is an array holding two references to object i+1; the last object is
/// an empty string: 2^levels values from a few hundred bytes.
fn reference_bomb(levels: usize) -> Vec<u8> {
    let mut data = b"bplist00".to_vec();
    let mut offsets = Vec::new();
    for i in 0..levels {
        offsets.push(data.len());
        let next = u8::try_from(i + 1).unwrap();
        data.extend_from_slice(&[0xa2, next, next]);
    }
    offsets.push(data.len());
    data.push(0x50);
    let table = data.len();
    for off in &offsets {
        data.extend_from_slice(&u16::try_from(*off).unwrap().to_be_bytes());
    }
    data.extend_from_slice(&[0, 0, 0, 0, 0, 0, 2, 1]);
    data.extend_from_slice(&(offsets.len() as u64).to_be_bytes());
    data.extend_from_slice(&0u64.to_be_bytes());
    data.extend_from_slice(&(table as u64).to_be_bytes());
    data
}

fn nested_arrays(depth: usize) -> Vec<u8> {
    let mut xml = String::from("<?xml version=\"1.0\"?><plist version=\"1.0\">");
    xml.push_str(&"<array>".repeat(depth));
    xml.push_str(&"</array>".repeat(depth));
    xml.push_str("</plist>");
    xml.into_bytes()
}

fn assert_limit(errors: [SocketError; 2], what: &str) {
    for err in errors {
        assert!(!err.is_fatal(), "{what}: {err}");
        assert!(
            matches!(&err, SocketError::PlistPayload { source, .. } if source.is_limit()),
            "{what}: {err:?}"
        );
    }
}

/// H1: a 40-level reference bomb (2^40 values once expanded) in 264 bytes.
#[test]
fn binary_reference_bomb_is_refused() {
    let bomb = reference_bomb(40);
    assert!(bomb.len() < 300, "{}", bomb.len());
    let errors = decode_both_ways(bomb);
    for err in &errors {
        assert!(
            matches!(
                err,
                SocketError::PlistPayload {
                    source: plist_limits::Error::TooLarge { .. },
                    ..
                }
            ),
            "{err:?}"
        );
    }
    assert_limit(errors, "bomb");
}

/// H2: 200 000 nested arrays, 3 MB of valid XML, under the 4 MiB message limit.
#[test]
fn deep_xml_nesting_is_refused() {
    let deep = nested_arrays(200_000);
    assert!(deep.len() > 3_000_000);
    let errors = decode_both_ways(deep);
    for err in &errors {
        assert!(
            matches!(
                err,
                SocketError::PlistPayload {
                    source: plist_limits::Error::TooDeep { max: 128, .. },
                    ..
                }
            ),
            "{err:?}"
        );
    }
    assert_limit(errors, "deep");
}

/// Nesting within the default limit still decodes (and is then refused as not a dictionary).
#[test]
fn nesting_at_the_limit_still_parses() {
    let [request, response] = decode_both_ways(nested_arrays(128));
    assert!(matches!(
        request,
        SocketError::NotADictionary { found: "array" }
    ));
    assert!(matches!(
        response,
        SocketError::NotADictionary { found: "array" }
    ));
}

/// Adds the attacks above to the socket fuzz targets' seed corpora, so the normal test run
/// replays them through the fuzz bodies too.
#[test]
#[ignore = "writes seed files; run by hand"]
fn write_hostile_seeds() {
    let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    for target in ["socket_requests", "socket_responses"] {
        let dir = base.join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("hostile_reference_bomb_40"),
            message(&reference_bomb(40)),
        )
        .unwrap();
        std::fs::write(
            dir.join("hostile_nested_1000"),
            message(&nested_arrays(1000)),
        )
        .unwrap();
    }
}
