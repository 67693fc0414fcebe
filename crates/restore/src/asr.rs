//! ASR (Apple Software Restore) on port 12345 in restore mode: how the OS image reaches the
//! phone. This module owns the ASR framing (both sides use it; the virtual phone's sink too)
//! and the host's side of the conversation, sans-IO.
//!
//! - Framing ([`encode`], [`AsrReader`]): ASR plists are XML and carry no length prefix: a
//!   plist ends with its closing `</plist>` line (`</plist>\n`). Between plists the same stream
//!   carries raw bytes (OOB data, the payload), which [`AsrReader::take`] hands out.
//! - The host ([`AsrSender`]): waits for the phone's `Initiate` (which may ask for checksum
//!   chunks), answers with the packet info (`Checksum Chunk Size` 131072, `FEC Slice Stride`
//!   40, `Packet Payload Size` 1450, `Packets Per FEC` 25, `Payload` {`Port` 1, `Size`},
//!   `Stream ID` 1, `Version` 1), then serves the phone's `OOBData` requests (byte ranges of
//!   the image) until it says `Payload`: then the driver streams the image in chunks, each
//!   followed by its 20-byte SHA-1 ([`chunk_trailer`]) when checksums are on.
//!
//! ```
//! use restore::asr::{encode, AsrAction, AsrReader, AsrSender};
//! let mut host = AsrSender::new(4096);
//! let mut initiate = plist::Dictionary::new();
//! initiate.insert("Command".into(), "Initiate".into());
//! initiate.insert("Checksum Chunks".into(), true.into());
//! host.handle_input(&encode(&initiate)?)?;
//! // The packet info goes back to the phone.
//! let mut phone = AsrReader::new();
//! phone.push(&host.take_output());
//! let info = phone.next_plist()?.ok_or("no packet info")?;
//! assert_eq!(info.get("Checksum Chunk Size").and_then(|v| v.as_unsigned_integer()), Some(131072));
//! let mut payload = plist::Dictionary::new();
//! payload.insert("Command".into(), "Payload".into());
//! host.handle_input(&encode(&payload)?)?;
//! assert_eq!(host.poll_action(), Some(AsrAction::Payload { chunk_size: 131072, checksums: true }));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::VecDeque;

use plist::{Dictionary, Value};
use sha1::{Digest, Sha1};

/// Checksum chunk size every host sends (and the default).
pub const CHUNK_SIZE: usize = 131072;
/// SHA-1 length after each chunk.
pub const CHECKSUM_LEN: usize = 20;
/// Largest plist accepted before its closing line.
pub const MAX_PLIST_LEN: usize = 64 * 1024;
/// Largest `Checksum Chunk Size` accepted.
pub const MAX_CHUNK_SIZE: usize = 1 << 20;
/// The line that ends every ASR plist.
pub const END_LINE: &[u8] = b"</plist>\n";

/// A plist that cannot be framed or read.
#[derive(Debug, thiserror::Error)]
pub enum AsrError {
    /// No closing `</plist>` line within the limit.
    #[error("ASR stream holds {buffered} bytes without a closing </plist> line (limit {max})")]
    TooLong {
        /// Bytes buffered.
        buffered: usize,
        /// The limit.
        max: usize,
    },
    /// The framed bytes are not a plist dictionary.
    #[error("ASR plist ({len} bytes) does not decode: {source}")]
    Invalid {
        /// Frame length.
        len: usize,
        /// What the decoder said.
        #[source]
        source: lockdown::CodecError,
    },
    /// The dictionary could not be written.
    #[error("ASR plist does not encode: {0}")]
    Encode(#[from] plist::Error),
}

/// Encodes one ASR plist: XML ending with the `</plist>` line.
pub fn encode(dict: &Dictionary) -> Result<Vec<u8>, AsrError> {
    let mut out = Vec::new();
    Value::Dictionary(dict.clone()).to_writer_xml(&mut out)?;
    while out.last().is_some_and(|b| b.is_ascii_whitespace()) {
        out.pop();
    }
    out.push(b'\n');
    Ok(out)
}

/// Cuts an ASR byte stream into plists and raw runs (sans-IO).
#[derive(Debug, Default, Clone)]
pub struct AsrReader {
    buf: Vec<u8>,
    scanned: usize,
}

impl AsrReader {
    /// An empty reader.
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes that arrived.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Bytes held.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next plist, if its closing line is in. Fails on a plist that does not decode and
    /// on more than [`MAX_PLIST_LEN`] bytes without a closing line.
    pub fn next_plist(&mut self) -> Result<Option<Dictionary>, AsrError> {
        let from = self.scanned.saturating_sub(END_LINE.len());
        let found = self
            .buf
            .get(from..)
            .and_then(|tail| tail.windows(END_LINE.len()).position(|w| w == END_LINE));
        let Some(pos) = found else {
            self.scanned = self.buf.len();
            if self.buf.len() > MAX_PLIST_LEN {
                return Err(AsrError::TooLong {
                    buffered: self.buf.len(),
                    max: MAX_PLIST_LEN,
                });
            }
            return Ok(None);
        };
        let end = from + pos + END_LINE.len();
        if end > MAX_PLIST_LEN {
            return Err(AsrError::TooLong {
                buffered: end,
                max: MAX_PLIST_LEN,
            });
        }
        let frame: Vec<u8> = self.buf.drain(..end).collect();
        self.scanned = 0;
        lockdown::decode_dictionary(&frame)
            .map(Some)
            .map_err(|source| AsrError::Invalid {
                len: frame.len(),
                source,
            })
    }

    /// Exactly `n` raw bytes, once they are all in.
    pub fn take(&mut self, n: usize) -> Option<Vec<u8>> {
        if self.buf.len() < n {
            return None;
        }
        self.scanned = 0;
        Some(self.buf.drain(..n).collect())
    }
}

/// Why the host side stopped.
#[derive(Debug, thiserror::Error)]
pub enum AsrHostError {
    /// The phone's bytes do not frame.
    #[error(transparent)]
    Framing(#[from] AsrError),
    /// A command at the wrong time, or one this host does not know.
    #[error("ASR: the phone said {command:?} while the host was {state}")]
    Unexpected {
        /// The command.
        command: String,
        /// Where the host was.
        state: &'static str,
    },
    /// An OOB range outside the image.
    #[error("ASR: the phone asked OOB bytes {offset}+{length} of a {size}-byte image")]
    OobRange {
        /// Offset asked.
        offset: u64,
        /// Length asked.
        length: u64,
        /// The image's size.
        size: u64,
    },
}

/// What the driver must send next, besides [`AsrSender::take_output`]'s plists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AsrAction {
    /// These raw bytes of the image (an `OOBData` answer).
    Oob {
        /// Offset in the image.
        offset: u64,
        /// How many bytes.
        length: u64,
    },
    /// The whole image, in `chunk_size` pieces, each followed by [`chunk_trailer`] when
    /// `checksums`; the conversation is over after it.
    Payload {
        /// Chunk size.
        chunk_size: usize,
        /// Whether each chunk is followed by its SHA-1.
        checksums: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SenderState {
    AwaitInitiate,
    Serving,
    Streaming,
}

impl SenderState {
    fn name(self) -> &'static str {
        match self {
            SenderState::AwaitInitiate => "waiting for Initiate",
            SenderState::Serving => "serving OOB data",
            SenderState::Streaming => "streaming the payload",
        }
    }
}

/// The host's side of ASR (sans-IO).
#[derive(Debug, Clone)]
pub struct AsrSender {
    reader: AsrReader,
    size: u64,
    checksums: bool,
    state: SenderState,
    out: Vec<u8>,
    actions: VecDeque<AsrAction>,
}

/// The packet info the host answers `Initiate` with.
pub fn packet_info(size: u64) -> Dictionary {
    let mut payload = Dictionary::new();
    payload.insert("Port".into(), Value::from(1u64));
    payload.insert("Size".into(), Value::from(size));
    let mut d = Dictionary::new();
    d.insert("Checksum Chunk Size".into(), Value::from(CHUNK_SIZE as u64));
    d.insert("FEC Slice Stride".into(), Value::from(40u64));
    d.insert("Packet Payload Size".into(), Value::from(1450u64));
    d.insert("Packets Per FEC".into(), Value::from(25u64));
    d.insert("Payload".into(), Value::Dictionary(payload));
    d.insert("Stream ID".into(), Value::from(1u64));
    d.insert("Version".into(), Value::from(1u64));
    d
}

/// The 20-byte SHA-1 that follows each payload chunk when checksums are on.
pub fn chunk_trailer(chunk: &[u8]) -> [u8; CHECKSUM_LEN] {
    Sha1::digest(chunk).into()
}

impl AsrSender {
    /// A host about to stream a `size`-byte image.
    pub fn new(size: u64) -> Self {
        Self {
            reader: AsrReader::new(),
            size,
            checksums: false,
            state: SenderState::AwaitInitiate,
            out: Vec::new(),
            actions: VecDeque::new(),
        }
    }

    /// Plists for the phone.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    /// The next raw send the phone is owed.
    pub fn poll_action(&mut self) -> Option<AsrAction> {
        self.actions.pop_front()
    }

    /// Whether the phone asked for the payload (nothing more will be read).
    pub fn is_streaming(&self) -> bool {
        self.state == SenderState::Streaming
    }

    /// Bytes from the phone.
    pub fn handle_input(&mut self, data: &[u8]) -> Result<(), AsrHostError> {
        self.reader.push(data);
        while self.state != SenderState::Streaming {
            let Some(dict) = self.reader.next_plist()? else {
                return Ok(());
            };
            let command = dict
                .get("Command")
                .and_then(Value::as_string)
                .unwrap_or_default()
                .chars()
                .take(64)
                .collect::<String>();
            match (self.state, command.as_str()) {
                (SenderState::AwaitInitiate, "Initiate") => {
                    self.checksums = dict
                        .get("Checksum Chunks")
                        .and_then(Value::as_boolean)
                        .unwrap_or(false);
                    let info = encode(&packet_info(self.size))?;
                    self.out.extend(info);
                    self.state = SenderState::Serving;
                }
                (SenderState::Serving, "OOBData") => {
                    let get = |k: &str| dict.get(k).and_then(Value::as_unsigned_integer);
                    let (offset, length) = (get("OOB Offset"), get("OOB Length"));
                    let (Some(offset), Some(length)) = (offset, length) else {
                        return Err(AsrHostError::Unexpected {
                            command: "OOBData without OOB Offset/OOB Length".into(),
                            state: self.state.name(),
                        });
                    };
                    if offset.checked_add(length).is_none_or(|end| end > self.size) {
                        return Err(AsrHostError::OobRange {
                            offset,
                            length,
                            size: self.size,
                        });
                    }
                    self.actions.push_back(AsrAction::Oob { offset, length });
                }
                (SenderState::Serving, "Payload") => {
                    self.actions.push_back(AsrAction::Payload {
                        chunk_size: CHUNK_SIZE,
                        checksums: self.checksums,
                    });
                    self.state = SenderState::Streaming;
                }
                (state, _) => {
                    return Err(AsrHostError::Unexpected {
                        command,
                        state: state.name(),
                    })
                }
            }
        }
        Ok(())
    }
}
