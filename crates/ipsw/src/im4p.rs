//! IM4P, the DER envelope of every img4 firmware payload:
//! `SEQUENCE { IA5String "IM4P", IA5String type, IA5String description, OCTET STRING payload,
//! ... }`. Only what the store and the synthesizer need: encode, and a strict decoder.

use crate::error::Error;

const TAG_SEQUENCE: u8 = 0x30;
const TAG_IA5: u8 = 0x16;
const TAG_OCTETS: u8 = 0x04;

/// A decoded IM4P.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Im4p {
    /// Four-character payload type, e.g. `ibss`, `krnl`, `rdsk`.
    pub kind: String,
    /// Free text, e.g. `iBoot-7459.100.504`.
    pub description: String,
    /// The (possibly encrypted or compressed) payload.
    pub payload: Vec<u8>,
    /// Raw DER of any elements after the payload (KBAG, compression info), kept as is.
    pub trailer: Vec<u8>,
}

impl Im4p {
    /// A plain IM4P with no trailer.
    pub fn new(kind: &str, description: &str, payload: Vec<u8>) -> Im4p {
        Im4p {
            kind: kind.to_owned(),
            description: description.to_owned(),
            payload,
            trailer: Vec::new(),
        }
    }

    /// DER bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(self.payload.len() + 64);
        put_tlv(&mut body, TAG_IA5, b"IM4P");
        put_tlv(&mut body, TAG_IA5, self.kind.as_bytes());
        put_tlv(&mut body, TAG_IA5, self.description.as_bytes());
        put_tlv(&mut body, TAG_OCTETS, &self.payload);
        body.extend_from_slice(&self.trailer);
        let mut out = Vec::with_capacity(body.len() + 6);
        put_tlv(&mut out, TAG_SEQUENCE, &body);
        out
    }

    /// Decode DER; anything malformed is an [`Error::Im4p`].
    pub fn decode(data: &[u8]) -> Result<Im4p, Error> {
        let (tag, body, rest) = take_tlv(data, 0)?;
        if tag != TAG_SEQUENCE {
            return Err(im4p("not a SEQUENCE", 0));
        }
        if !rest.is_empty() {
            return Err(im4p("bytes after the SEQUENCE", data.len() - rest.len()));
        }
        let base = data.len() - rest.len() - body.len();
        let mut cur = body;
        let mut next = |expect: u8, what: &'static str| -> Result<&[u8], Error> {
            let offset = base + (body.len() - cur.len());
            let (tag, value, rest) = take_tlv(cur, offset)?;
            if tag != expect {
                return Err(im4p(what, offset));
            }
            cur = rest;
            Ok(value)
        };
        let magic = next(TAG_IA5, "magic is not an IA5String")?;
        if magic != b"IM4P" {
            return Err(im4p("magic is not IM4P", base));
        }
        let kind = ia5(next(TAG_IA5, "type is not an IA5String")?, base)?;
        let description = ia5(next(TAG_IA5, "description is not an IA5String")?, base)?;
        let payload = next(TAG_OCTETS, "payload is not an OCTET STRING")?.to_vec();
        let trailer = cur.to_vec();
        // The trailer must itself be well-formed TLVs.
        let mut t = trailer.as_slice();
        while !t.is_empty() {
            let offset = base + body.len() - t.len();
            t = take_tlv(t, offset)?.2;
        }
        Ok(Im4p {
            kind,
            description,
            payload,
            trailer,
        })
    }
}

fn im4p(reason: &'static str, offset: usize) -> Error {
    Error::Im4p { reason, offset }
}

fn ia5(bytes: &[u8], offset: usize) -> Result<String, Error> {
    if !bytes.is_ascii() {
        return Err(im4p("IA5String with non-ASCII bytes", offset));
    }
    String::from_utf8(bytes.to_vec()).map_err(|_| im4p("IA5String with non-ASCII bytes", offset))
}

fn put_tlv(out: &mut Vec<u8>, tag: u8, value: &[u8]) {
    out.push(tag);
    let len = value.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = (len as u64).to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (8 - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(value);
}

/// One DER TLV: (tag, value, rest). Lengths must be minimal (DER, not BER).
fn take_tlv(data: &[u8], offset: usize) -> Result<(u8, &[u8], &[u8]), Error> {
    let (&tag, rest) = data.split_first().ok_or(im4p("truncated tag", offset))?;
    let (&first, mut rest) = rest
        .split_first()
        .ok_or(im4p("truncated length", offset + 1))?;
    let len = if first < 0x80 {
        first as usize
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 8 {
            return Err(im4p("indefinite or oversized length", offset + 1));
        }
        if rest.len() < n {
            return Err(im4p("truncated length", offset + 2));
        }
        let (len_bytes, after) = rest.split_at(n);
        rest = after;
        if len_bytes.first() == Some(&0) {
            return Err(im4p("non-minimal length", offset + 2));
        }
        let mut len: u64 = 0;
        for b in len_bytes {
            len = (len << 8) | u64::from(*b);
        }
        if len < 0x80 {
            return Err(im4p("non-minimal length", offset + 2));
        }
        usize::try_from(len).map_err(|_| im4p("length exceeds input", offset + 2))?
    };
    if rest.len() < len {
        return Err(im4p("length exceeds input", offset));
    }
    let (value, rest) = rest.split_at(len);
    Ok((tag, value, rest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn short_im4p_bytes() {
        let der = Im4p::new("ibss", "x", vec![1, 2]).encode();
        assert_eq!(
            der,
            [
                0x30, 0x13, 0x16, 4, b'I', b'M', b'4', b'P', 0x16, 4, b'i', b'b', b's', b's', 0x16,
                1, b'x', 0x04, 2, 1, 2
            ]
        );
    }

    #[test]
    fn bad_input_is_an_error() {
        let good = Im4p::new("krnl", "kernel", vec![7; 300]).encode();
        for cut in 0..good.len() {
            assert!(Im4p::decode(&good[..cut]).is_err(), "cut at {cut}");
        }
        let mut wrong_magic = good.clone();
        let at = wrong_magic.windows(4).position(|w| w == b"IM4P").unwrap();
        wrong_magic[at + 3] = b'M';
        assert!(matches!(
            Im4p::decode(&wrong_magic),
            Err(Error::Im4p {
                reason: "magic is not IM4P",
                ..
            })
        ));
        assert!(Im4p::decode(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(Im4p::decode(&[0x30, 0x81, 0x05, 0, 0, 0, 0, 0]).is_err());
    }

    proptest! {
        #[test]
        fn decode_encode_roundtrip(
            kind in "[a-z]{4}",
            description in "[ -~]{0,200}",
            payload in proptest::collection::vec(any::<u8>(), 0..3_000),
        ) {
            let m = Im4p::new(&kind, &description, payload);
            prop_assert_eq!(Im4p::decode(&m.encode()).unwrap(), m);
        }
    }
}
