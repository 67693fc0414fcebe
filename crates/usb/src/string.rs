//! String descriptors (USB 2.0 §9.6.7): UTF-16LE text, and the language table at index 0.
//!
//! iBoot and SecureROM put their serial string (`CPID:8020 ... ECID:...`) in the string named
//! by `iSerialNumber`, and the nonces in string 1; both come through [`decode`].

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::descriptor::{descriptor_type, DescriptorError, DescriptorKind};

/// A USB language id (LANGID), e.g. `0x0409` for English (United States).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LanguageId(pub u16);

impl LanguageId {
    /// English (United States): what Apple devices list.
    pub const EN_US: LanguageId = LanguageId(0x0409);
}

impl fmt::Display for LanguageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#06x}", self.0)
    }
}

/// The most UTF-16 units a string descriptor can hold (`bLength` is one byte).
pub const MAX_UNITS: usize = 126;

/// Checks the header of a string descriptor and returns its payload (after the 2 header bytes,
/// up to `bLength`). Bytes after `bLength` are ignored.
fn payload(data: &[u8]) -> Result<&[u8], DescriptorError> {
    let kind = DescriptorKind::String;
    let (len, ty) = match data {
        [len, ty, ..] => (*len, *ty),
        _ => {
            return Err(DescriptorError::Truncated {
                kind,
                offset: 0,
                needed: 2,
                available: data.len(),
            })
        }
    };
    if ty != descriptor_type::STRING {
        return Err(DescriptorError::WrongType {
            expected: kind,
            found: ty,
        });
    }
    if len < 2 {
        return Err(DescriptorError::BadLength {
            kind,
            offset: 0,
            length: len,
            minimum: 2,
        });
    }
    if len % 2 != 0 {
        return Err(DescriptorError::OddStringLength { length: len });
    }
    data.get(2..usize::from(len))
        .ok_or(DescriptorError::Truncated {
            kind,
            offset: 0,
            needed: usize::from(len),
            available: data.len(),
        })
}

/// Decodes a string descriptor (index ≥ 1) to text.
///
/// Unpaired UTF-16 surrogates become U+FFFD rather than an error: the rest of a serial string
/// is still worth reading.
///
/// ```
/// let raw = [10, 3, b'A', 0, b'p', 0, b'p', 0, b'l', 0];
/// assert_eq!(usb::string::decode(&raw)?, "Appl");
/// assert_eq!(usb::string::encode("Appl")?, raw);
/// # Ok::<(), usb::DescriptorError>(())
/// ```
pub fn decode(data: &[u8]) -> Result<String, DescriptorError> {
    let units = payload(data)?
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]));
    Ok(char::decode_utf16(units)
        .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
        .collect())
}

/// Decodes string descriptor 0: the list of languages the device offers.
pub fn decode_languages(data: &[u8]) -> Result<Vec<LanguageId>, DescriptorError> {
    Ok(payload(data)?
        .chunks_exact(2)
        .map(|c| LanguageId(u16::from_le_bytes([c[0], c[1]])))
        .collect())
}

fn frame(units: impl ExactSizeIterator<Item = u16>) -> Result<Vec<u8>, DescriptorError> {
    let n = units.len();
    if n > MAX_UNITS {
        return Err(DescriptorError::TooLong {
            kind: DescriptorKind::String,
            length: 2 + 2 * n,
        });
    }
    let mut out = Vec::with_capacity(2 + 2 * n);
    out.push((2 + 2 * n) as u8);
    out.push(descriptor_type::STRING);
    for u in units {
        out.extend_from_slice(&u.to_le_bytes());
    }
    Ok(out)
}

/// Encodes text as a string descriptor (what a device sends).
pub fn encode(text: &str) -> Result<Vec<u8>, DescriptorError> {
    let units: Vec<u16> = text.encode_utf16().collect();
    frame(units.into_iter())
}

/// Encodes a language table (string descriptor 0).
pub fn encode_languages(languages: &[LanguageId]) -> Result<Vec<u8>, DescriptorError> {
    frame(languages.iter().map(|l| l.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_text_and_languages() {
        let raw = encode("Apple Mobile Device (DFU Mode)").unwrap();
        assert_eq!(raw[0] as usize, raw.len());
        assert_eq!(decode(&raw).unwrap(), "Apple Mobile Device (DFU Mode)");
        assert_eq!(
            decode_languages(&[4, 3, 0x09, 0x04]).unwrap(),
            [LanguageId::EN_US]
        );
        assert_eq!(decode(&[2, 3]).unwrap(), "");
        // Bytes after bLength (a buffer bigger than the descriptor) are ignored.
        assert_eq!(decode(&[4, 3, b'x', 0, 0xff, 0xff]).unwrap(), "x");
        // Non-ASCII survives.
        assert_eq!(decode(&encode("é✓😀").unwrap()).unwrap(), "é✓😀");
    }

    #[test]
    fn garbage_gives_typed_errors() {
        use DescriptorError as E;
        assert!(matches!(decode(&[]), Err(E::Truncated { .. })));
        assert!(matches!(
            decode(&[4, 2, 0, 0]),
            Err(E::WrongType { found: 2, .. })
        ));
        assert!(matches!(decode(&[1, 3]), Err(E::BadLength { .. })));
        assert_eq!(
            decode(&[5, 3, 0, 0, 0]),
            Err(E::OddStringLength { length: 5 })
        );
        assert!(matches!(
            decode(&[8, 3, b'a', 0]),
            Err(E::Truncated {
                needed: 8,
                available: 4,
                ..
            })
        ));
        assert!(matches!(
            encode(&"x".repeat(127)),
            Err(E::TooLong { length: 256, .. })
        ));
        assert_eq!(encode(&"x".repeat(126)).unwrap()[0], 254);
    }

    #[test]
    fn unpaired_surrogate_becomes_replacement() {
        assert_eq!(decode(&[4, 3, 0x00, 0xd8]).unwrap(), "\u{fffd}");
    }
}
