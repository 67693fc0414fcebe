//! ASR (Apple Software Restore) on port 12345 in restore mode: how the OS image reaches the
//! phone. The framing is `restore::asr`'s (re-exported here); this module owns the
//! device-side sink.
//!
//! - Framing ([`encode`], [`AsrReader`]): ASR plists are XML and carry no length prefix: a
//!   plist ends with its closing `</plist>` line (`</plist>\n`). Between plists the same stream
//!   carries raw bytes (OOB data, the payload), which [`AsrReader::take`] hands out.
//! - The sink ([`AsrSink`], sans-IO): sends `Initiate` (asking for checksum chunks), reads the
//!   host's packet info (`Checksum Chunk Size`, `Payload.Size`, ...), asks `OOBData` ranges
//!   (the first 512 bytes, and the last 512 when the image is bigger than 1 KiB), then
//!   `Payload`, and checks every chunk of `Checksum Chunk Size` bytes against the 20-byte
//!   SHA-1 that follows it, the OOB bytes against the same offsets of the payload, and the
//!   total size. The first mismatch is an [`AsrFailure`].
//!
//! ```
//! use sim::asr::{encode, AsrReader};
//! let mut dict = plist::Dictionary::new();
//! dict.insert("Command".into(), "Payload".into());
//! let mut wire = encode(&dict)?;
//! wire.extend_from_slice(b"raw image bytes");
//! let mut reader = AsrReader::new();
//! reader.push(&wire[..10]);
//! assert_eq!(reader.next_plist()?, None); // the closing line has not come yet
//! reader.push(&wire[10..]);
//! assert_eq!(reader.next_plist()?, Some(dict));
//! assert_eq!(reader.take(15).as_deref(), Some(&b"raw image bytes"[..]));
//! # Ok::<(), sim::asr::AsrError>(())
//! ```

use plist::{Dictionary, Value};
use sha1::{Digest, Sha1};

pub use restore::asr::{
    encode, AsrError, AsrReader, CHECKSUM_LEN, CHUNK_SIZE, END_LINE, MAX_CHUNK_SIZE, MAX_PLIST_LEN,
};

/// Why the sink refused the stream: what a real phone reports as an ASR failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AsrFailure {
    /// The host's packet info is not a plist, or lacks `Payload.Size`.
    #[error("ASR packet info unusable: {why}")]
    BadPacketInfo {
        /// What was wrong.
        why: String,
    },
    /// A chunk's SHA-1 does not match.
    #[error("ASR chunk {index} (offset {offset}) fails its SHA-1 check")]
    ChecksumMismatch {
        /// 0-based chunk number.
        index: u64,
        /// Image offset of the chunk.
        offset: u64,
    },
    /// OOB bytes sent earlier differ from the payload at the same offset.
    #[error("ASR OOB data at offset {offset} differs from the payload")]
    OobMismatch {
        /// Offset of the OOB range.
        offset: u64,
    },
    /// The stream ended before the announced size.
    #[error("ASR image short: {received} of {size} bytes")]
    Short {
        /// Bytes received and checked.
        received: u64,
        /// Announced size.
        size: u64,
    },
    /// More bytes than announced.
    #[error("ASR image longer than the announced {size} bytes")]
    TooLong {
        /// Announced size.
        size: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    PacketInfo,
    Oob { offset: u64, length: u64 },
    Payload,
    Done,
    Failed,
}

/// The device side of one ASR connection.
#[derive(Debug, Clone)]
pub struct AsrSink {
    reader: AsrReader,
    phase: Phase,
    out: Vec<u8>,
    checksums: bool,
    chunk_size: usize,
    size: Option<u64>,
    received: u64,
    chunks: u64,
    oob_pending: Vec<(u64, u64)>,
    oob: Vec<(u64, Vec<u8>)>,
    sha256: sha2::Sha256,
}

fn command(name: &str) -> Dictionary {
    let mut d = Dictionary::new();
    d.insert("Command".into(), Value::from(name));
    d
}

impl Default for AsrSink {
    fn default() -> Self {
        Self::new()
    }
}

impl AsrSink {
    /// A connection just accepted: `Initiate` (asking for checksum chunks) is queued.
    pub fn new() -> Self {
        let mut initiate = command("Initiate");
        initiate.insert("Checksum Chunks".into(), Value::from(true));
        initiate.insert("Version".into(), Value::from(1u64));
        let mut s = Self {
            reader: AsrReader::new(),
            phase: Phase::PacketInfo,
            out: Vec::new(),
            checksums: true,
            chunk_size: CHUNK_SIZE,
            size: None,
            received: 0,
            chunks: 0,
            oob_pending: Vec::new(),
            oob: Vec::new(),
            sha256: sha2::Digest::new(),
        };
        s.say(&initiate);
        s
    }

    fn say(&mut self, dict: &Dictionary) {
        if let Ok(bytes) = encode(dict) {
            self.out.extend(bytes);
        }
    }

    /// Bytes for the host.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    /// The announced image size, once the packet info came.
    pub fn size(&self) -> Option<u64> {
        self.size
    }

    /// Image bytes received and checked.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Whether the whole image arrived and checked out.
    pub fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }

    /// SHA-256 of the image so far (all of it once done).
    pub fn sha256(&self) -> [u8; 32] {
        sha2::Digest::finalize(self.sha256.clone()).into()
    }

    fn fail(&mut self, failure: AsrFailure) -> Result<(), AsrFailure> {
        self.phase = Phase::Failed;
        Err(failure)
    }

    /// Bytes from the host. An error ends the stream (the connection should be reset).
    pub fn handle_input(&mut self, data: &[u8]) -> Result<(), AsrFailure> {
        if self.phase == Phase::Failed {
            return Ok(());
        }
        self.reader.push(data);
        loop {
            match self.phase.clone() {
                Phase::PacketInfo => {
                    let info = match self.reader.next_plist() {
                        Ok(Some(d)) => d,
                        Ok(None) => return Ok(()),
                        Err(e) => {
                            return self.fail(AsrFailure::BadPacketInfo { why: e.to_string() })
                        }
                    };
                    self.packet_info(&info)?;
                }
                Phase::Oob { offset, length } => {
                    let Some(bytes) = self.reader.take(length as usize) else {
                        return Ok(());
                    };
                    self.oob.push((offset, bytes));
                    self.next_oob();
                }
                Phase::Payload => {
                    let size = self.size.unwrap_or(0);
                    let chunk = (size - self.received).min(self.chunk_size as u64) as usize;
                    let need = chunk + if self.checksums { CHECKSUM_LEN } else { 0 };
                    let Some(bytes) = self.reader.take(need) else {
                        return Ok(());
                    };
                    let (image, sum) = bytes.split_at(chunk);
                    if self.checksums && Sha1::digest(image).as_slice() != sum {
                        let (index, offset) = (self.chunks, self.received);
                        return self.fail(AsrFailure::ChecksumMismatch { index, offset });
                    }
                    let start = self.received;
                    for (offset, oob) in &self.oob {
                        let (a, b) = (*offset, *offset + oob.len() as u64);
                        let (lo, hi) = (a.max(start), b.min(start + chunk as u64));
                        if lo < hi {
                            let mine = &image[(lo - start) as usize..(hi - start) as usize];
                            let theirs = &oob[(lo - a) as usize..(hi - a) as usize];
                            if mine != theirs {
                                let offset = *offset;
                                return self.fail(AsrFailure::OobMismatch { offset });
                            }
                        }
                    }
                    sha2::Digest::update(&mut self.sha256, image);
                    self.received += chunk as u64;
                    self.chunks += 1;
                    if self.received == size {
                        self.phase = Phase::Done;
                    }
                }
                Phase::Done => {
                    if self.reader.buffered() > 0 {
                        let size = self.size.unwrap_or(0);
                        return self.fail(AsrFailure::TooLong { size });
                    }
                    return Ok(());
                }
                Phase::Failed => return Ok(()),
            }
        }
    }

    fn packet_info(&mut self, info: &Dictionary) -> Result<(), AsrFailure> {
        let size = info
            .get("Payload")
            .and_then(Value::as_dictionary)
            .and_then(|p| p.get("Size"))
            .and_then(Value::as_unsigned_integer);
        let Some(size) = size else {
            return self.fail(AsrFailure::BadPacketInfo {
                why: "no Payload.Size".into(),
            });
        };
        if let Some(chunk) = info.get("Checksum Chunk Size") {
            match chunk.as_unsigned_integer() {
                Some(n) if n > 0 && n as usize <= MAX_CHUNK_SIZE => self.chunk_size = n as usize,
                _ => {
                    return self.fail(AsrFailure::BadPacketInfo {
                        why: format!("Checksum Chunk Size {chunk:?}"),
                    })
                }
            }
        }
        self.size = Some(size);
        self.oob_pending = vec![(0, size.min(512))];
        if size > 1024 {
            self.oob_pending.push((size - 512, 512));
        }
        self.oob_pending.retain(|(_, len)| *len > 0);
        self.oob_pending.reverse();
        self.next_oob();
        Ok(())
    }

    fn next_oob(&mut self) {
        match self.oob_pending.pop() {
            Some((offset, length)) => {
                let mut d = command("OOBData");
                d.insert("OOB Offset".into(), Value::from(offset));
                d.insert("OOB Length".into(), Value::from(length));
                self.say(&d);
                self.phase = Phase::Oob { offset, length };
            }
            None => {
                self.say(&command("Payload"));
                self.phase = if self.size == Some(0) {
                    Phase::Done
                } else {
                    Phase::Payload
                };
            }
        }
    }

    /// The host closed the connection: fine when done, else the image is short.
    pub fn closed(&mut self) -> Result<(), AsrFailure> {
        match self.phase {
            Phase::Done | Phase::Failed => Ok(()),
            _ => {
                let (received, size) = (self.received, self.size.unwrap_or(0));
                self.fail(AsrFailure::Short { received, size })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(image: &[u8], corrupt_chunk: Option<usize>) -> Result<AsrSink, AsrFailure> {
        let mut sink = AsrSink::new();
        let mut r = AsrReader::new();
        r.push(&sink.take_output());
        assert_eq!(
            r.next_plist().unwrap().unwrap().get("Command"),
            Some(&Value::from("Initiate"))
        );
        let mut info = Dictionary::new();
        info.insert("Checksum Chunk Size".into(), Value::from(CHUNK_SIZE as u64));
        let mut payload = Dictionary::new();
        payload.insert("Port".into(), Value::from(1u64));
        payload.insert("Size".into(), Value::from(image.len() as u64));
        info.insert("Payload".into(), Value::Dictionary(payload));
        sink.handle_input(&encode(&info).unwrap())?;
        loop {
            r.push(&sink.take_output());
            let Some(cmd) = r.next_plist().unwrap() else {
                panic!("the sink must ask something")
            };
            match cmd.get("Command").and_then(Value::as_string) {
                Some("OOBData") => {
                    let off = cmd["OOB Offset"].as_unsigned_integer().unwrap() as usize;
                    let len = cmd["OOB Length"].as_unsigned_integer().unwrap() as usize;
                    sink.handle_input(&image[off..off + len])?;
                }
                Some("Payload") => break,
                other => panic!("{other:?}"),
            }
        }
        for (i, chunk) in image.chunks(CHUNK_SIZE).enumerate() {
            let mut sum = Sha1::digest(chunk).to_vec();
            if corrupt_chunk == Some(i) {
                sum[0] ^= 1;
            }
            sink.handle_input(chunk)?;
            sink.handle_input(&sum)?;
        }
        Ok(sink)
    }

    #[test]
    fn a_whole_image_checks_out_and_a_bad_chunk_does_not() {
        let image: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let mut sink = stream(&image, None).unwrap();
        assert!(sink.is_done());
        assert_eq!(sink.received(), 300_000);
        assert_eq!(
            sink.sha256(),
            <[u8; 32]>::from(sha2::Sha256::digest(&image))
        );
        assert_eq!(sink.closed(), Ok(()));
        assert_eq!(
            stream(&image, Some(1)).unwrap_err(),
            AsrFailure::ChecksumMismatch {
                index: 1,
                offset: CHUNK_SIZE as u64
            }
        );
        let mut short = AsrSink::new();
        let _ = short.take_output();
        assert!(matches!(short.closed(), Err(AsrFailure::Short { .. })));
    }

    #[test]
    fn framing_waits_for_the_closing_line_and_bounds_the_buffer() {
        let mut r = AsrReader::new();
        r.push(b"<?xml version=\"1.0\"?><plist><dict></dict></plist>");
        assert!(r.next_plist().unwrap().is_none(), "no newline yet");
        r.push(b"\nrest");
        assert_eq!(r.next_plist().unwrap(), Some(Dictionary::new()));
        assert_eq!(r.take(4).as_deref(), Some(&b"rest"[..]));
        let mut r = AsrReader::new();
        r.push(&vec![b'a'; MAX_PLIST_LEN + 1]);
        assert!(matches!(r.next_plist(), Err(AsrError::TooLong { .. })));
        let mut r = AsrReader::new();
        r.push(b"garbage</plist>\n");
        assert!(matches!(r.next_plist(), Err(AsrError::Invalid { .. })));
    }
}
