//! The little DER this crate needs: a writer for the IMG4 family's elements (universal types
//! and Apple's private-class tags named by four characters, e.g. `[PRIVATE 'ECID']`) and a
//! strict, bounded reader (definite minimal lengths only, depth-limited, never panics).

use thiserror::Error;

/// Universal SEQUENCE (constructed).
pub const SEQUENCE: Tag = Tag::universal(0x10, true);
/// Universal SET (constructed).
pub const SET: Tag = Tag::universal(0x11, true);
/// Universal IA5String.
pub const IA5_STRING: Tag = Tag::universal(0x16, false);
/// Universal OCTET STRING.
pub const OCTET_STRING: Tag = Tag::universal(0x04, false);
/// Universal INTEGER.
pub const INTEGER: Tag = Tag::universal(0x02, false);
/// Universal BOOLEAN.
pub const BOOLEAN: Tag = Tag::universal(0x01, false);

/// Deepest nesting the reader follows.
pub const MAX_DEPTH: usize = 16;

/// A DER identifier: class, constructed bit and number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag {
    /// The class bits (0x00 universal, 0x40 application, 0x80 context, 0xC0 private).
    pub class: u8,
    /// Constructed (0x20) or primitive.
    pub constructed: bool,
    /// Tag number.
    pub number: u32,
}

impl Tag {
    /// A universal tag.
    pub const fn universal(number: u32, constructed: bool) -> Tag {
        Tag {
            class: 0x00,
            constructed,
            number,
        }
    }

    /// A constructed context-specific tag (`[n]`).
    pub const fn context(number: u32) -> Tag {
        Tag {
            class: 0x80,
            constructed: true,
            number,
        }
    }

    /// A constructed private tag named by four ASCII characters (`[PRIVATE 'ECID']`).
    pub const fn private(fourcc: [u8; 4]) -> Tag {
        Tag {
            class: 0xC0,
            constructed: true,
            number: u32::from_be_bytes(fourcc),
        }
    }

    /// The four characters of a private tag's number.
    pub fn fourcc(self) -> [u8; 4] {
        self.number.to_be_bytes()
    }
}

/// Malformed DER.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DerError {
    /// The input ended inside an element.
    #[error("DER truncated at offset {offset}: {what}")]
    Truncated {
        /// Where.
        offset: usize,
        /// What was being read.
        what: &'static str,
    },
    /// Not DER (indefinite or non-minimal length, oversized tag number, ...).
    #[error("DER not canonical at offset {offset}: {what}")]
    NotCanonical {
        /// Where.
        offset: usize,
        /// What was wrong.
        what: &'static str,
    },
    /// A different element was expected here.
    #[error("DER at offset {offset}: expected {expected}, found tag {found:?}")]
    Unexpected {
        /// Where.
        offset: usize,
        /// What the structure needs.
        expected: &'static str,
        /// What was there.
        found: Tag,
    },
    /// A value of the right tag with unacceptable content.
    #[error("DER at offset {offset}: bad {what}")]
    BadValue {
        /// Where.
        offset: usize,
        /// Which value.
        what: &'static str,
    },
    /// Nested deeper than [`MAX_DEPTH`].
    #[error("DER nested deeper than {MAX_DEPTH}")]
    TooDeep,
}

/// Appends one element.
pub fn put(out: &mut Vec<u8>, tag: Tag, value: &[u8]) {
    put_header(out, tag, value.len());
    out.extend_from_slice(value);
}

/// Appends an identifier and a length; the caller appends `len` content bytes.
pub fn put_header(out: &mut Vec<u8>, tag: Tag, len: usize) {
    put_tag(out, tag);
    put_len(out, len);
}

/// Bytes an identifier and length take.
pub fn header_len(tag: Tag, len: usize) -> usize {
    let mut v = Vec::with_capacity(16);
    put_header(&mut v, tag, len);
    v.len()
}

/// One element as a new vector.
pub fn element(tag: Tag, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len() + 8);
    put(&mut out, tag, value);
    out
}

fn put_tag(out: &mut Vec<u8>, tag: Tag) {
    let first = tag.class | if tag.constructed { 0x20 } else { 0 };
    if tag.number < 0x1F {
        out.push(first | tag.number as u8);
        return;
    }
    out.push(first | 0x1F);
    let mut groups = [0u8; 5];
    let mut n = tag.number;
    let mut count = 0;
    loop {
        if let Some(slot) = groups.get_mut(count) {
            *slot = (n & 0x7F) as u8;
        }
        count += 1;
        n >>= 7;
        if n == 0 {
            break;
        }
    }
    for i in (0..count).rev() {
        let g = groups.get(i).copied().unwrap_or(0);
        out.push(if i == 0 { g } else { g | 0x80 });
    }
}

fn put_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = (len as u64).to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (8 - skip) as u8);
        out.extend_from_slice(bytes.get(skip..).unwrap_or_default());
    }
}

/// The content octets of a non-negative INTEGER.
pub fn uint_bytes(v: u64) -> Vec<u8> {
    let bytes = v.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count().min(7);
    let mut out = Vec::with_capacity(9);
    let rest = bytes.get(skip..).unwrap_or_default();
    if rest.first().is_some_and(|b| b & 0x80 != 0) {
        out.push(0);
    }
    out.extend_from_slice(rest);
    out
}

/// Reads a non-negative INTEGER that fits in a u64.
pub fn read_uint(value: &[u8], offset: usize) -> Result<u64, DerError> {
    let bad = DerError::BadValue {
        offset,
        what: "unsigned INTEGER",
    };
    match value {
        [] => Err(bad),
        [first, ..] if first & 0x80 != 0 => Err(bad),
        [0, second, ..] if second & 0x80 == 0 => Err(DerError::NotCanonical {
            offset,
            what: "INTEGER with a redundant leading zero",
        }),
        _ => {
            let digits = match value {
                [0, rest @ ..] if !rest.is_empty() => rest,
                v => v,
            };
            if digits.len() > 8 {
                return Err(bad);
            }
            Ok(digits.iter().fold(0u64, |n, b| (n << 8) | u64::from(*b)))
        }
    }
}

/// One element read from a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Element<'a> {
    /// Its tag.
    pub tag: Tag,
    /// Its content octets.
    pub value: &'a [u8],
    /// The whole element (identifier, length and content).
    pub raw: &'a [u8],
    /// Offset of the element in the outermost input.
    pub offset: usize,
    /// Offset of the content octets in the outermost input.
    pub value_offset: usize,
}

impl<'a> Element<'a> {
    /// A reader over this element's content.
    pub fn reader(&self) -> Reader<'a> {
        Reader {
            data: self.value,
            base: self.value_offset,
        }
    }

    /// Fails unless the tag is `tag`.
    pub fn expect(self, tag: Tag, expected: &'static str) -> Result<Element<'a>, DerError> {
        if self.tag == tag {
            Ok(self)
        } else {
            Err(DerError::Unexpected {
                offset: self.offset,
                expected,
                found: self.tag,
            })
        }
    }
}

/// Sequential reader over DER elements.
#[derive(Debug, Clone, Copy)]
pub struct Reader<'a> {
    data: &'a [u8],
    base: usize,
}

impl<'a> Reader<'a> {
    /// A reader over `data`, which starts at offset 0.
    pub fn new(data: &'a [u8]) -> Reader<'a> {
        Reader { data, base: 0 }
    }

    /// True when nothing is left.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The current offset in the outermost input.
    pub fn offset(&self) -> usize {
        self.base
    }

    /// The next element.
    pub fn read(&mut self) -> Result<Element<'a>, DerError> {
        let start = self.base;
        let data = self.data;
        let trunc = |at: usize, what| DerError::Truncated {
            offset: start + at,
            what,
        };
        let (&first, _) = data.split_first().ok_or(trunc(0, "identifier"))?;
        let class = first & 0xC0;
        let constructed = first & 0x20 != 0;
        let mut pos = 1usize;
        let number = if first & 0x1F != 0x1F {
            u32::from(first & 0x1F)
        } else {
            let mut n: u64 = 0;
            let mut groups = 0;
            loop {
                let b = *data.get(pos).ok_or(trunc(pos, "tag number"))?;
                if groups == 0 && b == 0x80 {
                    return Err(DerError::NotCanonical {
                        offset: start + pos,
                        what: "tag number with a leading zero group",
                    });
                }
                pos += 1;
                groups += 1;
                n = (n << 7) | u64::from(b & 0x7F);
                if groups > 5 || n > u64::from(u32::MAX) {
                    return Err(DerError::NotCanonical {
                        offset: start + pos,
                        what: "tag number over 32 bits",
                    });
                }
                if b & 0x80 == 0 {
                    break;
                }
            }
            if n < 0x1F {
                return Err(DerError::NotCanonical {
                    offset: start + pos,
                    what: "low tag number in long form",
                });
            }
            n as u32
        };
        let len_byte = *data.get(pos).ok_or(trunc(pos, "length"))?;
        pos += 1;
        let len = if len_byte < 0x80 {
            usize::from(len_byte)
        } else {
            let n = usize::from(len_byte & 0x7F);
            if n == 0 || n > 8 {
                return Err(DerError::NotCanonical {
                    offset: start + pos - 1,
                    what: "indefinite or oversized length",
                });
            }
            let bytes = data
                .get(pos..pos + n)
                .ok_or(trunc(pos, "long-form length"))?;
            if bytes.first() == Some(&0) {
                return Err(DerError::NotCanonical {
                    offset: start + pos,
                    what: "length with a leading zero",
                });
            }
            pos += n;
            let len = bytes.iter().fold(0u64, |l, b| (l << 8) | u64::from(*b));
            if len < 0x80 {
                return Err(DerError::NotCanonical {
                    offset: start + pos,
                    what: "long-form length under 128",
                });
            }
            usize::try_from(len).map_err(|_| trunc(pos, "content"))?
        };
        let end = pos.checked_add(len).ok_or(trunc(pos, "content"))?;
        let value = data.get(pos..end).ok_or(trunc(pos, "content"))?;
        let raw = data.get(..end).ok_or(trunc(pos, "content"))?;
        self.data = data.get(end..).unwrap_or_default();
        self.base = start + end;
        Ok(Element {
            tag: Tag {
                class,
                constructed,
                number,
            },
            value,
            raw,
            offset: start,
            value_offset: start + pos,
        })
    }

    /// The next element, which must have `tag`.
    pub fn expect(&mut self, tag: Tag, expected: &'static str) -> Result<Element<'a>, DerError> {
        self.read()?.expect(tag, expected)
    }

    /// Fails if anything is left.
    pub fn finish(&self, what: &'static str) -> Result<(), DerError> {
        if self.data.is_empty() {
            Ok(())
        } else {
            Err(DerError::BadValue {
                offset: self.base,
                what,
            })
        }
    }
}

/// Reads an IA5String's content as text.
pub fn ia5(e: &Element<'_>) -> Result<String, DerError> {
    if !e.value.is_ascii() {
        return Err(DerError::BadValue {
            offset: e.value_offset,
            what: "IA5String with non-ASCII bytes",
        });
    }
    Ok(e.value.iter().map(|b| char::from(*b)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn private_tag_bytes() {
        let e = element(Tag::private(*b"ECID"), &[]);
        // 0xFF, then 'ECID' as 0x45434944 in base 128.
        assert_eq!(e, [0xFF, 0x84, 0xAA, 0x8D, 0x92, 0x44, 0x00]);
        let back = Reader::new(&e).read().unwrap();
        assert_eq!(back.tag, Tag::private(*b"ECID"));
        assert_eq!(back.tag.fourcc(), *b"ECID");
    }

    #[test]
    fn integers() {
        assert_eq!(uint_bytes(0), [0]);
        assert_eq!(uint_bytes(0x80), [0, 0x80]);
        assert_eq!(read_uint(&[0, 0x80], 0), Ok(0x80));
        assert!(read_uint(&[0, 0x10], 0).is_err());
        assert!(read_uint(&[0x80], 0).is_err());
        assert!(read_uint(&[], 0).is_err());
    }

    #[test]
    fn bad_lengths() {
        assert!(Reader::new(&[0x04, 0x80]).read().is_err());
        assert!(Reader::new(&[0x04, 0x81, 0x05]).read().is_err());
        assert!(Reader::new(&[0x04, 0x82, 0x00, 0x90]).read().is_err());
        assert!(Reader::new(&[0x04, 0x89, 1, 1, 1, 1, 1, 1, 1, 1, 1])
            .read()
            .is_err());
        assert!(Reader::new(&[0x04, 0x88, 0xff, 1, 1, 1, 1, 1, 1, 1])
            .read()
            .is_err());
        assert!(Reader::new(&[0xFF, 0x80, 0x01, 0x00]).read().is_err());
    }

    proptest! {
        #[test]
        fn element_roundtrip(class in 0u8..4, constructed: bool, number: u32,
                             value in proptest::collection::vec(any::<u8>(), 0..400)) {
            let tag = Tag { class: class << 6, constructed, number };
            let e = element(tag, &value);
            let mut r = Reader::new(&e);
            let back = r.read().unwrap();
            prop_assert!(r.is_empty());
            prop_assert_eq!(back.tag, tag);
            prop_assert_eq!(back.value, &value[..]);
            prop_assert_eq!(back.raw, &e[..]);
        }

        #[test]
        fn uint_roundtrip(v: u64) {
            prop_assert_eq!(read_uint(&uint_bytes(v), 0), Ok(v));
        }
    }
}
