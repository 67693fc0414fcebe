//! The iBoot / SecureROM serial string, and the nonce string next to it.
//!
//! In recovery (iBoot) and DFU (SecureROM) the phone's USB `iSerialNumber` string is a list of
//! space-separated `TAG:value` fields, for example
//! `SDOM:01 CPID:8110 CPRV:11 CPFM:03 SCEP:01 BDID:0E ECID:001A2B3C4D5E6F70 IBFL:3C SRTG:[iBoot-7429.0.0.0.1]`.
//! [`SerialInfo::parse`] reads every field of it; [`Nonces::parse`] reads the separate nonce
//! string (string descriptor 1: `NONC:<hex> SNON:<hex>`).
//!
//! # How the parser reads a string
//!
//! - Input is bytes (`&[u8]` or `&str`): a string descriptor may hold anything, and bytes that are
//!   not UTF-8 never make the parser fail; inside text values they become U+FFFD.
//! - A field is a tag of 1 to 16 ASCII letters, digits or `_`, a `:`, then a value: either
//!   `[bracketed text]` (which may contain spaces; an unterminated bracket runs to the end) or
//!   text up to the next whitespace or NUL. A tag followed directly by whitespace or the end is a
//!   field without a value. Anything else between fields (words without `:`, stray bytes) is
//!   skipped.
//! - Hex fields (CPID, CPRV, CPFM, SCEP, BDID, ECID, IBFL, SDOM, SIKA) accept 1 to 8 hex digits
//!   (16 for ECID), optionally `0x`-prefixed or bracketed. Anything else (`****`, `xxxx`,
//!   `[redacted]`, `0000038xxxx`, no value) leaves the field `None` and is listed in
//!   [`SerialInfo::unreadable`]: the parser says "unknown", it never invents a value.
//! - **Duplicate tags: the first occurrence wins.** Later fields with a tag already seen (known
//!   or not) are ignored, so text appended after the device's own fields can never override
//!   them.
//! - Unknown tags (`PWND:[checkm8]`, `NONC:...`) are kept in order in [`SerialInfo::extra`].
//! - **Size caps.** A real serial string is a USB string descriptor: under 256 bytes, about a
//!   dozen fields. The parser reads only fields that lie wholly within the first
//!   [`MAX_SERIAL_LENGTH`] (4 KiB) bytes, and at most [`MAX_FIELDS`] (256) fields; the rest is
//!   ignored and [`SerialInfo::truncated`] says so. A field cut by the 4 KiB limit is dropped,
//!   not read short (a cut `ECID:00022138` would be a wrong ECID). So any input, even 10 MB,
//!   is parsed in time proportional to at most 4 KiB (plus one pass over the input to find
//!   where its content ends, and one to see if it is blank). An input whose content fits in
//!   4 KiB is read whole, as before.
//! - The only error is a string in which no known tag appears at all (in what was read).

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::devices::{self, Device};

/// Longest tag the tokenizer accepts (real tags are four letters).
const MAX_TAG_LEN: usize = 16;

/// Bytes of a serial string the parser reads: fields ending beyond are ignored (a real
/// string is under 256 bytes). Trailing whitespace and NULs do not count.
pub const MAX_SERIAL_LENGTH: usize = 4096;

/// Fields (duplicates included) the parser reads; later ones are ignored (a real string has
/// about a dozen).
pub const MAX_FIELDS: usize = 256;

/// The tags [`SerialInfo`] has a field for, in the order a device writes them.
pub const KNOWN_TAGS: [&str; 12] = [
    "SDOM", "CPID", "CPRV", "CPFM", "SCEP", "BDID", "ECID", "IBFL", "SIKA", "SRTG", "SRNM", "IMEI",
];

/// `CPFM` bit 0: the chip is fused for production.
pub const CPFM_PRODUCTION: u32 = 1 << 0;
/// `CPFM` bit 1: the chip is fused secure.
pub const CPFM_SECURITY: u32 = 1 << 1;
/// `IBFL` bit 2: the boot stage understands Image4 (IMG4 firmware and tickets).
pub const IBFL_IMAGE4_AWARE: u32 = 1 << 2;
/// `IBFL` bit 3: effective security mode (may differ from the fuses after demotion).
pub const IBFL_EFFECTIVE_SECURITY: u32 = 1 << 3;
/// `IBFL` bit 4: effective production mode (may differ from the fuses after demotion).
pub const IBFL_EFFECTIVE_PRODUCTION: u32 = 1 << 4;

/// One `TAG:value` field that [`SerialInfo`] keeps as text: an unknown tag, or a known tag whose
/// value could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Field {
    /// The tag, e.g. `PWND`.
    pub tag: String,
    /// The value without brackets; `None` when the tag had no value at all (`TAG:` then space).
    pub value: Option<String>,
    /// Whether the value was written in brackets (`PWND:[checkm8]`).
    pub bracketed: bool,
}

/// Everything the iBoot/SecureROM serial string says. Every field is optional: old devices omit
/// some (SRTG, SDOM), public posts mask some (ECID), and a device may add tags this parser does
/// not know (they land in [`extra`](Self::extra)).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SerialInfo {
    /// `SDOM`: security domain (1 on phones).
    pub sdom: Option<u32>,
    /// `CPID`: chip id (e.g. 0x8010 for A10).
    pub cpid: Option<u32>,
    /// `CPRV`: chip revision.
    pub cprv: Option<u32>,
    /// `CPFM`: chip fuse mode (bit 0 production, bit 1 security).
    pub cpfm: Option<u32>,
    /// `SCEP`: security epoch.
    pub scep: Option<u32>,
    /// `BDID`: board id.
    pub bdid: Option<u32>,
    /// `ECID`: the chip's unique id, the one identity that survives every mode change. `None`
    /// when absent or masked (`****`, `xxxx`, `[redacted]`...).
    pub ecid: Option<u64>,
    /// `IBFL`: boot flags (bit 2 Image4-aware, bit 3 effective security, bit 4 effective
    /// production).
    pub ibfl: Option<u32>,
    /// `SIKA`.
    pub sika: Option<u32>,
    /// `SRTG`: SecureROM tag without brackets, e.g. `iBoot-2696.0.0.1.33` or `rom`. Absent on
    /// old devices and in recovery mode.
    pub srtg: Option<String>,
    /// `SRNM`: the device serial number (recovery mode).
    pub srnm: Option<String>,
    /// `IMEI` (recovery mode, cellular devices).
    pub imei: Option<String>,
    /// Known tags whose value could not be read (masked, empty, not hex), in order.
    pub unreadable: Vec<Field>,
    /// Tags this parser does not know (`PWND`, `NONC`...), in order, first occurrence only.
    pub extra: Vec<Field>,
    /// Part of the input was not read: it went on past [`MAX_SERIAL_LENGTH`] bytes or
    /// [`MAX_FIELDS`] fields (see the [module docs](self)). Not part of the rendering.
    #[serde(default)]
    pub truncated: bool,
}

/// The serial string contains nothing recognizable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SerialError {
    /// Empty, or only whitespace and NULs.
    #[error("empty serial string: expected iBoot/SecureROM fields like `CPID:8010 ECID:...`")]
    Empty,
    /// Not one known tag (CPID, ECID, BDID, ...) in the string.
    #[error(
        "no iBoot/SecureROM serial field (CPID:, ECID:, BDID:, ...) in {len} bytes starting {preview:?}"
    )]
    Unrecognized {
        /// Length of the input in bytes.
        len: usize,
        /// The first bytes of the input, lossily decoded, for the message.
        preview: String,
    },
}

/// The nonce string could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NonceError {
    /// Neither `NONC:` nor `SNON:` in the string (old devices answer `Apple Inc.` here).
    #[error("no NONC: or SNON: field in the nonce string {preview:?}")]
    NoNonce {
        /// The first bytes of the input, lossily decoded, for the message.
        preview: String,
    },
    /// A nonce tag is there but its value is not an even number of hex digits.
    #[error("{tag}: value {value:?} is not hex bytes")]
    BadHex {
        /// `NONC` or `SNON`.
        tag: &'static str,
        /// The value as found (lossily decoded).
        value: String,
    },
}

/// The nonces from string descriptor 1 in recovery/DFU: `NONC:<hex> SNON:<hex>`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nonces {
    /// `NONC`: the ApNonce (20 bytes on old devices, 32 on newer ones).
    pub ap_nonce: Option<Vec<u8>>,
    /// `SNON`: the SepNonce (20 bytes).
    pub sep_nonce: Option<Vec<u8>>,
}

// ---------------------------------------------------------------------------------------------
// Tokenizer

/// One `TAG:value` as found in the bytes.
#[derive(Debug, Clone, Copy)]
struct RawField<'a> {
    tag: &'a str,
    value: Option<&'a [u8]>,
    bracketed: bool,
}

fn is_separator(b: u8) -> bool {
    b.is_ascii_whitespace() || b == 0
}

fn is_tag_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Iterator over the `TAG:value` fields of a byte string (see the module docs for the rules).
/// Made with [`RawFields::limited`], it reads only the fields that lie wholly within the
/// first `limit` bytes and says whether it left something out ([`RawFields::cut`]).
struct RawFields<'a> {
    input: &'a [u8],
    pos: usize,
    /// Where reading stops: `input.len()`, or the limit when there is more than that to read.
    end: usize,
    /// Set once something was left out because of `end`.
    cut: bool,
}

impl<'a> RawFields<'a> {
    fn new(input: &'a [u8]) -> Self {
        Self {
            input,
            pos: 0,
            end: input.len(),
            cut: false,
        }
    }

    /// Reads only fields within the first `limit` bytes. An input whose content (trailing
    /// separators aside) fits is read whole, exactly as [`RawFields::new`] reads it.
    fn limited(input: &'a [u8], limit: usize) -> Self {
        let content = input
            .iter()
            .rposition(|&b| !is_separator(b))
            .map_or(0, |i| i + 1);
        let end = if content <= limit { input.len() } else { limit };
        Self {
            end,
            ..Self::new(input)
        }
    }

    /// Whether some of the input was left out because of the limit.
    fn cut(&self) -> bool {
        self.cut
    }

    /// Whether reading stops before the input does.
    fn limited_here(&self) -> bool {
        self.end < self.input.len()
    }

    fn peek(&self) -> Option<u8> {
        if self.pos >= self.end {
            return None;
        }
        self.input.get(self.pos).copied()
    }

    fn advance_while(&mut self, pred: impl Fn(u8) -> bool) {
        while self.peek().is_some_and(&pred) {
            self.pos += 1;
        }
    }

    fn slice(&self, start: usize, end: usize) -> &'a [u8] {
        self.input.get(start..end).unwrap_or_default()
    }

    /// The next field up to `end`, and for a bracketed one whether its `]` came.
    fn next_field(&mut self) -> Option<(RawField<'a>, bool)> {
        loop {
            self.advance_while(is_separator);
            let Some(first) = self.peek() else {
                self.cut |= self.limited_here();
                return None;
            };
            if !is_tag_byte(first) {
                // A stray byte (punctuation, non-ASCII): skip it and look again.
                self.pos += 1;
                continue;
            }
            let start = self.pos;
            self.advance_while(is_tag_byte);
            let tag_bytes = self.slice(start, self.pos);
            if tag_bytes.len() > MAX_TAG_LEN || self.peek() != Some(b':') {
                // A word that is not a tag (`Apple`, `(DFU`...).
                continue;
            }
            // Tag bytes are ASCII by construction.
            let Ok(tag) = std::str::from_utf8(tag_bytes) else {
                continue;
            };
            self.pos += 1; // the ':'
            let no_value = RawField {
                tag,
                value: None,
                bracketed: false,
            };
            let field = match self.peek() {
                None => (no_value, false),
                Some(b) if is_separator(b) => (no_value, false),
                Some(b'[') => {
                    self.pos += 1;
                    let vstart = self.pos;
                    self.advance_while(|b| b != b']');
                    let value = self.slice(vstart, self.pos);
                    let closed = self.peek() == Some(b']');
                    if closed {
                        self.pos += 1;
                    }
                    let field = RawField {
                        tag,
                        value: Some(value),
                        bracketed: true,
                    };
                    (field, closed)
                }
                Some(_) => {
                    let vstart = self.pos;
                    self.advance_while(|b| !is_separator(b));
                    let field = RawField {
                        tag,
                        value: Some(self.slice(vstart, self.pos)),
                        bracketed: false,
                    };
                    (field, false)
                }
            };
            return Some(field);
        }
    }
}

impl<'a> Iterator for RawFields<'a> {
    type Item = RawField<'a>;

    fn next(&mut self) -> Option<RawField<'a>> {
        let (field, closed) = self.next_field()?;
        if self.limited_here() && self.pos >= self.end {
            // The field runs up to the limit: it is whole only if its bracket closed, or
            // (unbracketed) a separator comes right after the limit.
            let whole = if field.bracketed {
                closed
            } else {
                self.input.get(self.end).copied().is_some_and(is_separator)
            };
            if !whole {
                self.cut = true;
                return None;
            }
        }
        Some(field)
    }
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn preview(bytes: &[u8]) -> String {
    let cut = bytes.get(..64).unwrap_or(bytes);
    lossy(cut)
}

/// Hex digits (optionally `0x`-prefixed), at most `max_digits` of them.
fn parse_hex(value: &[u8], max_digits: usize) -> Option<u64> {
    let digits = value
        .strip_prefix(b"0x")
        .or_else(|| value.strip_prefix(b"0X"))
        .unwrap_or(value);
    if digits.is_empty() || digits.len() > max_digits || !digits.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    let text = std::str::from_utf8(digits).ok()?;
    u64::from_str_radix(text, 16).ok()
}

fn parse_hex_u32(value: &[u8]) -> Option<u32> {
    parse_hex(value, 8).and_then(|v| u32::try_from(v).ok())
}

/// Bytes as lowercase-insensitive hex pairs (`"8B2D4E"` → `[0x8B, 0x2D, 0x4E]`).
fn parse_hex_bytes(value: &[u8]) -> Option<Vec<u8>> {
    if value.is_empty() || value.len() % 2 != 0 {
        return None;
    }
    value
        .chunks_exact(2)
        .map(|pair| {
            let text = std::str::from_utf8(pair).ok()?;
            if !pair.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            u8::from_str_radix(text, 16).ok()
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// SerialInfo

impl SerialInfo {
    /// Parse an iBoot/SecureROM serial string. See the module docs for the rules; the only error
    /// is a string with no known tag in it. Reads at most [`MAX_SERIAL_LENGTH`] bytes and
    /// [`MAX_FIELDS`] fields, setting [`SerialInfo::truncated`] when it leaves something out.
    pub fn parse(input: impl AsRef<[u8]>) -> Result<SerialInfo, SerialError> {
        let input = input.as_ref();
        if input.iter().all(|&b| is_separator(b)) {
            return Err(SerialError::Empty);
        }
        let mut info = SerialInfo::default();
        // First occurrence wins: known tags in a bitset, unknown ones in a set.
        let mut seen_known = 0u16;
        let mut seen_extra: HashSet<&str> = HashSet::new();
        let mut recognized = false;
        let mut fields = RawFields::limited(input, MAX_SERIAL_LENGTH);
        for (count, raw) in fields.by_ref().enumerate() {
            if count == MAX_FIELDS {
                info.truncated = true;
                break;
            }
            match known_index(raw.tag) {
                Some(i) => {
                    let bit = 1u16 << i;
                    if seen_known & bit != 0 {
                        continue;
                    }
                    seen_known |= bit;
                    info.take_known(&raw);
                    recognized = true;
                }
                None => {
                    if seen_extra.insert(raw.tag) {
                        info.extra.push(raw.to_field());
                    }
                }
            }
        }
        info.truncated |= fields.cut();
        if !recognized {
            return Err(SerialError::Unrecognized {
                len: input.len(),
                preview: preview(input),
            });
        }
        Ok(info)
    }

    /// Store a known tag; false when the tag is not one of [`KNOWN_TAGS`].
    fn take_known(&mut self, raw: &RawField<'_>) -> bool {
        let hex32 = |raw: &RawField<'_>| raw.value.and_then(parse_hex_u32);
        let text = |raw: &RawField<'_>| raw.value.filter(|v| !v.is_empty()).map(lossy);
        let readable = match raw.tag {
            "SDOM" => set(&mut self.sdom, hex32(raw)),
            "CPID" => set(&mut self.cpid, hex32(raw)),
            "CPRV" => set(&mut self.cprv, hex32(raw)),
            "CPFM" => set(&mut self.cpfm, hex32(raw)),
            "SCEP" => set(&mut self.scep, hex32(raw)),
            "BDID" => set(&mut self.bdid, hex32(raw)),
            "ECID" => set(&mut self.ecid, raw.value.and_then(|v| parse_hex(v, 16))),
            "IBFL" => set(&mut self.ibfl, hex32(raw)),
            "SIKA" => set(&mut self.sika, hex32(raw)),
            "SRTG" => set(&mut self.srtg, text(raw)),
            "SRNM" => set(&mut self.srnm, text(raw)),
            "IMEI" => set(&mut self.imei, text(raw)),
            _ => return false,
        };
        if !readable {
            self.unreadable.push(raw.to_field());
        }
        true
    }

    /// The device table row for this chip and board, when both are known and the table has one.
    pub fn device(&self) -> Option<&'static Device> {
        devices::by_chip_board(self.cpid?, self.bdid?)
    }

    /// The value of an unknown tag kept in [`extra`](Self::extra) (e.g. `PWND`).
    pub fn extra_value(&self, tag: &str) -> Option<&str> {
        self.extra
            .iter()
            .find(|f| f.tag == tag)
            .and_then(|f| f.value.as_deref())
    }

    /// What exploited the SecureROM, from the `PWND:[...]` field some tools append
    /// (e.g. `checkm8`). `None` on a normal device.
    pub fn pwned(&self) -> Option<&str> {
        self.extra_value("PWND")
    }

    /// Whether a known tag was present but its value was masked, empty or not hex
    /// (e.g. `unreadable_tag("ECID")` for `ECID:xxxx`).
    pub fn unreadable_tag(&self, tag: &str) -> bool {
        self.unreadable.iter().any(|f| f.tag == tag)
    }

    /// `CPFM` bit 0: fused for production.
    pub fn fused_production(&self) -> Option<bool> {
        self.cpfm.map(|v| v & CPFM_PRODUCTION != 0)
    }

    /// `CPFM` bit 1: fused secure.
    pub fn fused_security(&self) -> Option<bool> {
        self.cpfm.map(|v| v & CPFM_SECURITY != 0)
    }

    /// `IBFL` bit 2: the running boot stage is Image4-aware.
    pub fn image4_aware(&self) -> Option<bool> {
        self.ibfl.map(|v| v & IBFL_IMAGE4_AWARE != 0)
    }

    /// `IBFL` bit 3 as is: effective security mode (meaningful on Image4-aware devices).
    pub fn effective_security(&self) -> Option<bool> {
        self.ibfl.map(|v| v & IBFL_EFFECTIVE_SECURITY != 0)
    }

    /// `IBFL` bit 4 as is: effective production mode (meaningful on Image4-aware devices).
    pub fn effective_production(&self) -> Option<bool> {
        self.ibfl.map(|v| v & IBFL_EFFECTIVE_PRODUCTION != 0)
    }

    /// Production mode as a signing request needs it (`ApProductionMode`): on an Image4-aware
    /// device (`IBFL` bit 2 set) the effective mode, `IBFL` bit 4, which reflects demotion;
    /// otherwise (pre-Image4 devices report `IBFL:00`) the fuse, `CPFM` bit 0. `None` when
    /// neither field is readable.
    pub fn production_mode(&self) -> Option<bool> {
        match self.image4_aware() {
            Some(true) => self.effective_production(),
            _ => self.fused_production(),
        }
    }

    /// Security mode (`ApSecurityMode`): `IBFL` bit 3 on an Image4-aware device, else the fuse,
    /// `CPFM` bit 1. `None` when neither field is readable.
    pub fn security_mode(&self) -> Option<bool> {
        match self.image4_aware() {
            Some(true) => self.effective_security(),
            _ => self.fused_security(),
        }
    }
}

/// The position of `tag` in [`KNOWN_TAGS`].
fn known_index(tag: &str) -> Option<usize> {
    KNOWN_TAGS.iter().position(|&known| known == tag)
}

fn set<T>(slot: &mut Option<T>, value: Option<T>) -> bool {
    let readable = value.is_some();
    *slot = value;
    readable
}

impl RawField<'_> {
    fn to_field(self) -> Field {
        Field {
            tag: self.tag.to_owned(),
            value: self.value.map(lossy),
            bracketed: self.bracketed,
        }
    }
}

impl FromStr for SerialInfo {
    type Err = SerialError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SerialInfo::parse(s)
    }
}

/// Format an ECID the way restation prints it: `0x` and lowercase hex without zero padding
/// (`0x2213824536326`).
pub fn format_ecid(ecid: u64) -> String {
    format!("{ecid:#x}")
}

/// A known text field: brackets keep spaces inside the value; a value holding `]` cannot have
/// come from brackets (and holds no whitespace), so it is written bare.
fn text_field(tag: &str, value: &str) -> String {
    if value.contains(']') {
        format!("{tag}:{value}")
    } else {
        format!("{tag}:[{value}]")
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.value, self.bracketed) {
            (None, _) => write!(f, "{}:", self.tag),
            (Some(v), true) => write!(f, "{}:[{v}]", self.tag),
            (Some(v), false) => write!(f, "{}:{v}", self.tag),
        }
    }
}

/// Writes the canonical serial string (the device's field order and widths, upper-case hex);
/// parsing it again gives the same [`SerialInfo`].
impl fmt::Display for SerialInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<String> = Vec::new();
        let hex_fields = [
            ("SDOM", self.sdom.map(u64::from), 2),
            ("CPID", self.cpid.map(u64::from), 4),
            ("CPRV", self.cprv.map(u64::from), 2),
            ("CPFM", self.cpfm.map(u64::from), 2),
            ("SCEP", self.scep.map(u64::from), 2),
            ("BDID", self.bdid.map(u64::from), 2),
            ("ECID", self.ecid, 16),
            ("IBFL", self.ibfl.map(u64::from), 2),
            ("SIKA", self.sika.map(u64::from), 2),
        ];
        for (tag, value, width) in hex_fields {
            if let Some(v) = value {
                parts.push(format!("{tag}:{v:0width$X}"));
            }
        }
        for (tag, v) in [
            ("SRTG", &self.srtg),
            ("SRNM", &self.srnm),
            ("IMEI", &self.imei),
        ] {
            if let Some(v) = v {
                parts.push(text_field(tag, v));
            }
        }
        parts.extend(self.unreadable.iter().map(Field::to_string));
        parts.extend(self.extra.iter().map(Field::to_string));
        f.write_str(&parts.join(" "))
    }
}

// ---------------------------------------------------------------------------------------------
// Nonces

impl Nonces {
    /// Parse the nonce string (string descriptor 1 in recovery/DFU), e.g.
    /// ` NONC:977A728CA4DEC7636470F3A78D2D8DD9A2542C95 SNON:5F83...`. Either nonce may be absent
    /// (DFU on old devices has no SNON); neither is an error. The first occurrence of a tag wins.
    pub fn parse(input: impl AsRef<[u8]>) -> Result<Nonces, NonceError> {
        let input = input.as_ref();
        let mut nonces = Nonces::default();
        let mut seen_nonc = false;
        let mut seen_snon = false;
        for raw in RawFields::new(input) {
            let (tag, seen, slot): (&'static str, &mut bool, &mut Option<Vec<u8>>) = match raw.tag {
                "NONC" => ("NONC", &mut seen_nonc, &mut nonces.ap_nonce),
                "SNON" => ("SNON", &mut seen_snon, &mut nonces.sep_nonce),
                _ => continue,
            };
            if *seen {
                continue;
            }
            *seen = true;
            let value = raw.value.unwrap_or_default();
            match parse_hex_bytes(value) {
                Some(bytes) => *slot = Some(bytes),
                None => {
                    return Err(NonceError::BadHex {
                        tag,
                        value: lossy(value),
                    })
                }
            }
        }
        if !seen_nonc && !seen_snon {
            return Err(NonceError::NoNonce {
                preview: preview(input),
            });
        }
        Ok(nonces)
    }
}

fn write_hex(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    bytes.iter().try_for_each(|b| write!(f, "{b:02X}"))
}

/// Writes the nonce string as a device does (`NONC:... SNON:...`, upper-case hex).
impl fmt::Display for Nonces {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (tag, nonce) in [("NONC", &self.ap_nonce), ("SNON", &self.sep_nonce)] {
            if let Some(bytes) = nonce {
                if !first {
                    f.write_str(" ")?;
                }
                first = false;
                write!(f, "{tag}:")?;
                write_hex(f, bytes)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> SerialInfo {
        SerialInfo::parse(s).unwrap()
    }

    #[test]
    fn a10_dfu_string() {
        let info = parse("CPID:8010 CPRV:11 CPFM:03 SCEP:01 BDID:0C ECID:0002213824536326 IBFL:3C SRTG:[iBoot-2696.0.0.1.33]");
        assert_eq!(info.cpid, Some(0x8010));
        assert_eq!(info.cprv, Some(0x11));
        assert_eq!(info.cpfm, Some(0x03));
        assert_eq!(info.scep, Some(0x01));
        assert_eq!(info.bdid, Some(0x0C));
        assert_eq!(info.ecid, Some(0x0002_2138_2453_6326));
        assert_eq!(info.ibfl, Some(0x3C));
        assert_eq!(info.srtg.as_deref(), Some("iBoot-2696.0.0.1.33"));
        assert_eq!(info.sdom, None);
        assert_eq!(info.srnm, None);
        assert!(info.extra.is_empty() && info.unreadable.is_empty());
        assert_eq!(format_ecid(info.ecid.unwrap()), "0x2213824536326");
        let device = info.device().unwrap();
        assert_eq!(device.product_type, "iPhone9,3");
        assert_eq!(device.board_config, "d101ap");
    }

    #[test]
    fn newer_string_with_sdom_first() {
        let info = parse("SDOM:01 CPID:8110 CPRV:11 CPFM:03 SCEP:01 BDID:0E ECID:001A2B3C4D5E6F70 IBFL:3C SRTG:[iBoot-7429.0.0.0.1]");
        assert_eq!(info.sdom, Some(1));
        assert_eq!(info.cpid, Some(0x8110));
        assert_eq!(info.bdid, Some(0x0E));
        assert_eq!(info.ecid, Some(0x001A_2B3C_4D5E_6F70));
        assert_eq!(info.srtg.as_deref(), Some("iBoot-7429.0.0.0.1"));
        assert_eq!(info.device().unwrap().product_type, "iPhone14,3");
    }

    #[test]
    fn iphone13_dfu_shape_from_a_public_post() {
        // `lsusb -v` iSerial of an iPhone 13 in DFU with the ECID replaced by `[redacted]`.
        let info = parse("SDOM:01 CPID:8110 CPRV:11 CPFM:03 SCEP:01 BDID:0A ECID:[redacted] IBFL:3C SRTG:[iBoot-6338.0.0.200.19]");
        assert_eq!(info.ecid, None);
        assert!(info.unreadable_tag("ECID"));
        assert_eq!(info.device().unwrap().product_type, "iPhone14,5");
    }

    #[test]
    fn a7_recovery_with_serial_number_and_imei() {
        let info = parse("CPID:8960 CPRV:11 CPFM:03 SCEP:01 BDID:00 ECID:000012345678ABCD IBFL:1D SRNM:[F2LN1234ABCD] IMEI:[013977000123456]");
        assert_eq!(info.cpid, Some(0x8960));
        assert_eq!(info.ibfl, Some(0x1D));
        assert_eq!(info.srtg, None);
        assert_eq!(info.srnm.as_deref(), Some("F2LN1234ABCD"));
        assert_eq!(info.imei.as_deref(), Some("013977000123456"));
        assert_eq!(info.ecid, Some(0x12345678ABCD));
        assert_eq!(info.device().unwrap().product_type, "iPhone6,1");
    }

    #[test]
    fn old_32bit_devices_without_srtg() {
        let info = parse("CPID:8900 CPRV:20 CPFM:03 SCEP:03 BDID:00 ECID:000001234ABCDEF0 SRNM:[5K8201ABCDE] IMEI:[011223004455667]");
        assert_eq!(info.cpid, Some(0x8900));
        assert_eq!(info.srtg, None);
        assert_eq!(info.ibfl, None);
        assert_eq!(info.image4_aware(), None);
        assert_eq!(info.production_mode(), Some(true));
        assert_eq!(info.device().unwrap().product_type, "iPhone1,1");

        // A5 in DFU: IBFL:00 (pre-Image4), short SRTG.
        let a5 = parse("CPID:8940 CPRV:21 CPFM:03 SCEP:01 BDID:06 ECID:0000038500106D8C IBFL:00 SRTG:[iBoot-838.3]");
        assert_eq!(a5.image4_aware(), Some(false));
        assert_eq!(a5.production_mode(), Some(true), "falls back to CPFM");
        assert_eq!(a5.security_mode(), Some(true));
        assert_eq!(a5.srtg.as_deref(), Some("iBoot-838.3"));
    }

    #[test]
    fn rom_tag_and_checkm8_pwnd() {
        let info = parse("CPID:8015 CPRV:11 CPFM:03 SCEP:01 BDID:02 ECID:0016519820F8402E IBFL:3C SRTG:[rom] PWND:[checkm8]");
        assert_eq!(info.srtg.as_deref(), Some("rom"));
        assert_eq!(info.pwned(), Some("checkm8"));
        assert_eq!(
            info.extra,
            [Field {
                tag: "PWND".into(),
                value: Some("checkm8".into()),
                bracketed: true
            }]
        );
        assert_eq!(info.device().unwrap().product_type, "iPhone10,1");
    }

    #[test]
    fn masked_ecids_are_unknown_not_invented() {
        for masked in [
            "****",
            "xxxx",
            "XXXXXXXXXXXXXXXX",
            "0000038xxxx",
            "0011xxx",
            "[redacted]",
            "",
            "00000000000000000001", // 20 digits: too long for an ECID
            "-1",
        ] {
            let s = format!("CPID:8000 CPRV:20 CPFM:03 SCEP:01 BDID:06 ECID:{masked} IBFL:1C");
            let info = parse(&s);
            assert_eq!(info.ecid, None, "{s}");
            assert!(info.unreadable_tag("ECID"), "{s}");
            assert_eq!(info.cpid, Some(0x8000));
            assert_eq!(info.ibfl, Some(0x1C), "{s}");
        }
        // A lone masked ECID is still a serial string, with everything unknown.
        let info = parse("ECID:****");
        assert_eq!(info.ecid, None);
        assert_eq!(info.cpid, None);
    }

    #[test]
    fn fields_without_values() {
        let info = parse("CPID: CPRV:11 SRTG: BDID:0C");
        assert_eq!(info.cpid, None);
        assert_eq!(info.srtg, None);
        assert_eq!(info.cprv, Some(0x11));
        assert_eq!(info.bdid, Some(0x0C));
        let tags: Vec<_> = info.unreadable.iter().map(|f| f.tag.as_str()).collect();
        assert_eq!(tags, ["CPID", "SRTG"]);
        assert!(info.unreadable.iter().all(|f| f.value.is_none()));
        // Empty brackets and a value-less tag at the very end.
        let info = parse("CPID:8010 SRNM:[] IMEI:");
        assert_eq!(info.srnm, None);
        assert_eq!(info.imei, None);
        assert_eq!(info.unreadable.len(), 2);
    }

    #[test]
    fn duplicate_tags_first_wins() {
        let info = parse("CPID:8010 BDID:0C ECID:0000000000000001 CPID:8020 ECID:0000000000000002 PWND:[a] PWND:[b]");
        assert_eq!(info.cpid, Some(0x8010));
        assert_eq!(info.ecid, Some(1));
        assert_eq!(info.pwned(), Some("a"));
        assert_eq!(info.extra.len(), 1);
        // Even a masked first occurrence wins over a readable later one.
        let info = parse("ECID:xxxx ECID:0000000000000002");
        assert_eq!(info.ecid, None);
    }

    #[test]
    fn brackets_with_spaces_and_extra_whitespace() {
        let info = parse("  \t CPID:8960   CPRV:11\n\nSRNM:[F2LN 1234 ABCD]\r\n  IMEI:[35 123456 789012 3]   BDID:02\0\0\0");
        assert_eq!(info.cpid, Some(0x8960));
        assert_eq!(info.srnm.as_deref(), Some("F2LN 1234 ABCD"));
        assert_eq!(info.imei.as_deref(), Some("35 123456 789012 3"));
        assert_eq!(info.bdid, Some(0x02));
        // Unterminated bracket runs to the end.
        let info = parse("CPID:8010 SRTG:[iBoot-2696.0.0.1.33 BDID:0C");
        assert_eq!(info.srtg.as_deref(), Some("iBoot-2696.0.0.1.33 BDID:0C"));
        assert_eq!(info.bdid, None);
    }

    #[test]
    fn non_ascii_and_garbage_around_fields() {
        let mut bytes = b"\xff\xfe\x00CPID:8010 \xc3\x28 junk (DFU Mode) BDID:0C SRNM:[AB\xffCD] ECID:00000000DEADBEEF".to_vec();
        bytes.push(b' ');
        bytes.extend_from_slice(&[0x80; 10]);
        let info = SerialInfo::parse(&bytes).unwrap();
        assert_eq!(info.cpid, Some(0x8010));
        assert_eq!(info.bdid, Some(0x0C));
        assert_eq!(info.ecid, Some(0xDEADBEEF));
        assert_eq!(info.srnm.as_deref(), Some("AB\u{FFFD}CD"));
        // Non-hex bytes in a hex field, or glued to it: unreadable.
        let info = SerialInfo::parse(b"CPID:80\xff0 BDID:0C\x80\x80").unwrap();
        assert_eq!(info.cpid, None);
        assert_eq!(info.bdid, None);
        assert_eq!(info.unreadable.len(), 2);
    }

    #[test]
    fn ten_kilobyte_serial_is_read_up_to_the_cap() {
        let mut s = String::from("CPID:8010 CPRV:11 BDID:0C ");
        while s.len() < 10 * 1024 {
            s.push_str("ZZZZ:[padding padding] ");
        }
        s.push_str("ECID:0002213824536326 ");
        s.push_str(&"x".repeat(2048));
        let info = parse(&s);
        assert_eq!(info.cpid, Some(0x8010));
        assert_eq!(info.ecid, None, "the ECID lies past the first 4 KiB");
        assert!(info.truncated);
        assert_eq!(
            info.extra.len(),
            1,
            "duplicate unknown tags keep the first only"
        );
        // A 10 KB value inside one bracket does not close within the cap: dropped, not cut.
        let long = format!("CPID:8010 SRNM:[{}]", "A".repeat(10_000));
        let info = parse(&long);
        assert_eq!((info.srnm, info.truncated), (None, true));
        // A 4000-byte one does.
        let fits = format!("CPID:8010 SRNM:[{}]", "A".repeat(4000));
        let info = parse(&fits);
        assert_eq!(info.srnm.map(|s| s.len()), Some(4000));
        assert!(!info.truncated);
    }

    #[test]
    fn ten_megabyte_input_is_cut_not_crawled() {
        // 10 MB of distinct unknown tags: before the caps this took hours (every field was
        // checked against every tag seen so far).
        let mut s = String::from("CPID:8010 BDID:0C ");
        let mut i = 0u32;
        while s.len() < 10 * 1024 * 1024 {
            s.push_str(&format!("Z{i}:x "));
            i += 1;
        }
        s.push_str("ECID:0002213824536326");
        let info = parse(&s);
        assert_eq!((info.cpid, info.bdid), (Some(0x8010), Some(0x0C)));
        assert_eq!(info.ecid, None, "past the cap");
        assert!(info.truncated);
        assert_eq!(
            info.extra.len(),
            MAX_FIELDS - 2,
            "capped at {MAX_FIELDS} fields"
        );
        assert_eq!(info.extra.last().map(|f| f.tag.as_str()), Some("Z253"));
        // 10 MB of one long bracket, and 10 MB of one word: cut too.
        let bracket = format!("CPID:8010 SRNM:[{}]", "A".repeat(10 << 20));
        assert_eq!(parse(&bracket).srnm, None);
        let word = format!("CPID:8010 {}", "A".repeat(10 << 20));
        let info = parse(&word);
        assert_eq!(
            (info.cpid, info.truncated, info.extra.len()),
            (Some(0x8010), true, 0)
        );
    }

    #[test]
    fn field_cut_by_the_cap_is_dropped_not_read_short() {
        // Put "ECID:0002213824536326" across byte 4096, then after it exactly.
        let pad = |n: usize| format!("CPID:8010 PAD:[{}] ", "p".repeat(n - 17));
        let mut s = pad(4096 - 10);
        assert_eq!(s.len(), 4086);
        s.push_str("ECID:0002213824536326 CPRV:11");
        let info = parse(&s);
        assert_eq!(info.ecid, None, "a cut ECID is not an ECID");
        assert!(!info.unreadable_tag("ECID"), "nor an unreadable one");
        assert_eq!(info.cprv, None);
        assert!(info.truncated);
        // Ending exactly at the cap, a separator after it: whole.
        let mut s = pad(4096 - 21);
        s.push_str("ECID:0002213824536326 CPRV:11");
        let info = parse(&s);
        assert_eq!(info.ecid, Some(0x2213824536326));
        assert_eq!((info.cprv, info.truncated), (None, true));
        // A bracket closing exactly at the cap is whole too.
        let mut s = pad(4096 - 12);
        s.push_str("SRTG:[rom]");
        s.push_str("CPRV:11");
        let info = parse(&s);
        assert_eq!(info.srtg.as_deref(), Some("rom"));
        assert!(info.truncated);
        // A value-less tag at the cap, a value after it: dropped.
        let mut s = pad(4096 - 5);
        s.push_str("SRNM:X");
        let info = parse(&s);
        assert!(!info.unreadable_tag("SRNM") && info.truncated);
    }

    #[test]
    fn blank_tail_is_not_content() {
        let mut s = String::from("CPID:8010 SRTG:[iBoot-1 ");
        s.push_str(&" \0".repeat(10_000));
        let info = parse(&s);
        assert!(!info.truncated, "only whitespace and NULs past the cap");
        // Read exactly as before the caps: the unterminated bracket runs to the end.
        assert_eq!(info.srtg.map(|v| v.len()), Some(8 + 20_000));
    }

    #[test]
    fn at_most_max_fields_are_read() {
        let mut s = String::from("CPID:8010");
        for i in 0..300 {
            s.push_str(&format!(" A{i}:1"));
        }
        assert!(s.len() < MAX_SERIAL_LENGTH);
        let info = parse(&s);
        assert_eq!(info.extra.len(), MAX_FIELDS - 1);
        assert!(info.truncated);
        // Duplicates count as fields too.
        let s = format!("CPID:8010 {} ECID:1", "CPID:1 ".repeat(300));
        let info = parse(&s);
        assert_eq!(
            (info.cpid, info.ecid, info.truncated),
            (Some(0x8010), None, true)
        );
        // Exactly MAX_FIELDS: all read.
        let s = format!("CPID:8010{}", " CPRV:1".repeat(MAX_FIELDS - 1));
        assert!(!parse(&s).truncated);
    }

    #[test]
    fn garbage_is_an_error() {
        assert_eq!(SerialInfo::parse(""), Err(SerialError::Empty));
        assert_eq!(SerialInfo::parse(" \0\t"), Err(SerialError::Empty));
        for garbage in [
            "Apple Mobile Device (DFU Mode)",
            "hello world",
            "FOO:BAR BAZ:[qux]",
            "cpid:8010 ecid:0002213824536326", // tags are upper case
            ":::: [[[ ]]]",
        ] {
            let err = SerialInfo::parse(garbage).unwrap_err();
            assert!(
                matches!(err, SerialError::Unrecognized { .. }),
                "{garbage}: {err:?}"
            );
            assert!(err.to_string().contains("CPID"));
        }
        assert!(SerialInfo::parse([0xFFu8; 100]).is_err());
    }

    #[test]
    fn flags_come_from_the_documented_bits() {
        // Image4-aware, effective production and security (A7+ in DFU).
        let info = parse("CPID:8960 CPFM:03 IBFL:1C");
        assert_eq!(info.image4_aware(), Some(true)); // IBFL bit 2
        assert_eq!(info.security_mode(), Some(true)); // IBFL bit 3
        assert_eq!(info.production_mode(), Some(true)); // IBFL bit 4
                                                        // Demoted: fused production+security, effective development (bit 4 clear).
        let info = parse("CPID:8010 CPFM:03 IBFL:0C");
        assert_eq!(info.fused_production(), Some(true));
        assert_eq!(info.production_mode(), Some(false));
        assert_eq!(info.security_mode(), Some(true));
        // Effective security off (bit 3 clear), production on.
        let info = parse("CPID:8010 CPFM:03 IBFL:14");
        assert_eq!(info.security_mode(), Some(false));
        assert_eq!(info.production_mode(), Some(true));
        // Pre-Image4: CPFM bit 0 production, bit 1 security.
        let info = parse("CPID:8940 CPFM:01 IBFL:00");
        assert_eq!(info.production_mode(), Some(true));
        assert_eq!(info.security_mode(), Some(false));
        let info = parse("CPID:8940 CPFM:02");
        assert_eq!(info.fused_production(), Some(false));
        assert_eq!(info.fused_security(), Some(true));
        assert_eq!(info.production_mode(), Some(false));
        assert_eq!(info.security_mode(), Some(true));
        // Nothing to go on.
        let info = parse("CPID:8940");
        assert_eq!(info.production_mode(), None);
        assert_eq!(info.security_mode(), None);
        assert_eq!(info.image4_aware(), None);
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "SDOM:01 CPID:8110 CPRV:11 CPFM:03 SCEP:01 BDID:0E ECID:001A2B3C4D5E6F70 IBFL:3C SRTG:[iBoot-7429.0.0.0.1]",
            "CPID:8960 CPRV:11 CPFM:03 SCEP:01 BDID:00 ECID:000012345678ABCD IBFL:1D SRNM:[F2LN 1234] IMEI:[...]",
            "CPID:8015 ECID:xxxx SRTG:[rom] PWND:[checkm8] FOO: BAR:a]b",
            "SRNM:a]b CPID:1",
        ] {
            let info = parse(s);
            let again = parse(&info.to_string());
            assert_eq!(again, info, "{s} -> {info}");
        }
        assert_eq!(
            parse("SDOM:1 CPID:8010 BDID:c ECID:1").to_string(),
            "SDOM:01 CPID:8010 BDID:0C ECID:0000000000000001"
        );
    }

    #[test]
    fn nonces() {
        let n = Nonces::parse(" NONC:977A728CA4DEC7636470F3A78D2D8DD9A2542C95").unwrap();
        assert_eq!(n.ap_nonce.as_ref().map(Vec::len), Some(20));
        assert_eq!(n.ap_nonce.as_ref().unwrap()[..2], [0x97, 0x7A]);
        assert_eq!(n.sep_nonce, None);

        let n = Nonces::parse("NONC:ff1072eaf0ecfa0c00a385c5ca58e6f1ac98e9d108aae63c81d22f5596b6e827 SNON:9586faea02680eed6e7686dbdcecba6a34b808f3").unwrap();
        assert_eq!(n.ap_nonce.as_ref().map(Vec::len), Some(32));
        assert_eq!(n.sep_nonce.as_ref().map(Vec::len), Some(20));
        assert_eq!(n.sep_nonce.as_ref().unwrap()[0], 0x95);
        assert_eq!(Nonces::parse(n.to_string()).unwrap(), n);

        assert!(matches!(
            Nonces::parse("Apple Inc."),
            Err(NonceError::NoNonce { .. })
        ));
        assert!(matches!(
            Nonces::parse("NONC:xyz SNON:00"),
            Err(NonceError::BadHex { tag: "NONC", .. })
        ));
        assert!(matches!(
            Nonces::parse("NONC:ABC"),
            Err(NonceError::BadHex { .. })
        ));
        assert!(matches!(
            Nonces::parse("SNON:"),
            Err(NonceError::BadHex { tag: "SNON", .. })
        ));
        // First wins, other tags ignored.
        let n = Nonces::parse("CPID:8010 NONC:01 NONC:02 SNON:[0304]").unwrap();
        assert_eq!(n.ap_nonce, Some(vec![1]));
        assert_eq!(n.sep_nonce, Some(vec![3, 4]));
    }
}
