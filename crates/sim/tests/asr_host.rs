//! restation's ASR host (`restore::asr::AsrSender`) against the virtual phone's sink, in
//! memory: the whole conversation (Initiate, packet info, OOB ranges, the payload in
//! checksummed chunks), an image the sink accepts byte for byte, and a chunk corrupted on the
//! way that the sink refuses.

use restore::asr::{chunk_trailer, AsrAction, AsrSender};
use sha2::{Digest, Sha256};
use sim::asr::{AsrFailure, AsrSink};

fn image(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(131).wrapping_add(7))
        .collect()
}

/// Runs the conversation; `corrupt` flips a byte of chunk N on the way.
fn converse(image: &[u8], corrupt: Option<usize>) -> Result<AsrSink, AsrFailure> {
    let mut host = AsrSender::new(image.len() as u64);
    let mut phone = AsrSink::new();
    let mut oob_served = 0;
    loop {
        let to_host = phone.take_output();
        if !to_host.is_empty() {
            host.handle_input(&to_host).unwrap();
        }
        let plists = host.take_output();
        if !plists.is_empty() {
            phone.handle_input(&plists)?;
        }
        match host.poll_action() {
            Some(AsrAction::Oob { offset, length }) => {
                oob_served += 1;
                let range = offset as usize..(offset + length) as usize;
                phone.handle_input(&image[range])?;
            }
            Some(AsrAction::Payload {
                chunk_size,
                checksums,
            }) => {
                assert!(checksums, "the virtual phone asks for checksum chunks");
                assert!(oob_served >= 1, "the phone reads the image's head first");
                for (i, chunk) in image.chunks(chunk_size).enumerate() {
                    let mut sent = chunk.to_vec();
                    if corrupt == Some(i) {
                        sent[0] ^= 0xFF;
                    }
                    phone.handle_input(&sent)?;
                    phone.handle_input(&chunk_trailer(chunk))?;
                }
                phone.closed()?;
                return Ok(phone);
            }
            None if to_host.is_empty() && plists.is_empty() => {
                panic!("the conversation stalled")
            }
            None => {}
        }
    }
}

#[test]
fn the_host_streams_an_image_the_phone_accepts() {
    // Three full chunks and a short one.
    let image = image(3 * 131072 + 777);
    let phone = converse(&image, None).unwrap();
    assert!(phone.is_done());
    assert_eq!(phone.received(), image.len() as u64);
    assert_eq!(phone.sha256(), <[u8; 32]>::from(Sha256::digest(&image)));
}

#[test]
fn a_chunk_corrupted_on_the_way_is_refused_by_its_checksum() {
    let image = image(2 * 131072 + 5);
    let err = converse(&image, Some(1)).unwrap_err();
    assert!(
        matches!(err, AsrFailure::ChecksumMismatch { index: 1, .. }),
        "{err}"
    );
}
