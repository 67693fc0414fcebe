//! IMG4, the container a personalized image is booted from, and its parts:
//!
//! ```text
//! IMG4 = SEQUENCE { IA5String "IMG4", IM4P, [0] IM4M, [1] IM4R OPTIONAL }
//! IM4M = SEQUENCE { IA5String "IM4M", INTEGER 0, SET { MANB }, OCTET STRING sig, SEQUENCE certs }
//! MANB = [PRIVATE 'MANB'] SEQUENCE { IA5String "MANB", SET { MANP, image entries... } }
//! MANP / image entry = [PRIVATE tag] SEQUENCE { IA5String tag, SET { properties... } }
//! property = [PRIVATE name] SEQUENCE { IA5String name, INTEGER | BOOLEAN | OCTET STRING | IA5String }
//! IM4R = SEQUENCE { IA5String "IM4R", SET { properties... } }   (e.g. BNCN INTEGER, the boot nonce)
//! ```
//!
//! The IM4P itself is [`ipsw::Im4p`]. The signature covers the DER of `SET { MANB }` exactly
//! as it appears in the ticket ([`Im4m::signed_bytes`]).
//!
//! Encoding and decoding use this crate's own small DER ([`crate::der`]) so that every parser
//! here is strict, bounded and fuzzed in this crate; `tests/image4_interop.rs` checks that the
//! `image4` crate (0.8, crates.io) decodes what this module writes (payload, MANP, image
//! entries, signature, BNCN) and re-encodes it byte for byte.

use std::collections::BTreeMap;

use thiserror::Error;

use crate::der::{self, DerError, Element, Reader, Tag};

/// Largest IM4M this crate accepts (real ones are a few KiB).
pub const MAX_IM4M: usize = 1 << 20;

/// A four-character property or image tag, e.g. `ECID`, `ibss`.
pub type FourCc = [u8; 4];

/// A malformed or unexpected IMG4/IM4M/IM4R.
#[derive(Debug, Error)]
pub enum Img4Error {
    /// The DER itself is broken.
    #[error(transparent)]
    Der(#[from] DerError),
    /// The magic string is not the expected one.
    #[error("expected magic {expected:?}, found {found:?}")]
    Magic {
        /// e.g. `IM4M`.
        expected: &'static str,
        /// What was there (at most 16 characters).
        found: String,
    },
    /// A tag's IA5String name does not match the private tag around it.
    #[error("entry tagged {tag:?} names itself {name:?}")]
    NameMismatch {
        /// The private tag.
        tag: String,
        /// The name inside.
        name: String,
    },
    /// A property or image appears twice.
    #[error("duplicate entry {tag:?}")]
    Duplicate {
        /// Which.
        tag: String,
    },
    /// A tag is not four ASCII characters.
    #[error("tag {number:#x} is not four ASCII characters")]
    NotFourCc {
        /// The raw number.
        number: u32,
    },
    /// A property value of a type IMG4 does not use.
    #[error("property {tag:?} has an unsupported value type {found:?}")]
    ValueType {
        /// Property.
        tag: String,
        /// Its value's tag.
        found: Tag,
    },
    /// The IM4M is larger than [`MAX_IM4M`].
    #[error("IM4M of {len} bytes exceeds the {MAX_IM4M}-byte limit")]
    TooLarge {
        /// Its size.
        len: usize,
    },
    /// The IM4P inside the IMG4 does not decode.
    #[error("IM4P: {0}")]
    Im4p(#[source] ipsw::Error),
}

/// A property value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// `INTEGER` (non-negative, at most 64 bits).
    Int(u64),
    /// `BOOLEAN`.
    Bool(bool),
    /// `OCTET STRING`.
    Data(Vec<u8>),
    /// `IA5String`.
    Text(String),
}

impl Value {
    fn encode(&self) -> Vec<u8> {
        match self {
            Value::Int(n) => der::element(der::INTEGER, &der::uint_bytes(*n)),
            Value::Bool(b) => der::element(der::BOOLEAN, &[if *b { 0xFF } else { 0 }]),
            Value::Data(d) => der::element(der::OCTET_STRING, d),
            Value::Text(t) => der::element(der::IA5_STRING, t.as_bytes()),
        }
    }

    fn decode(tag: FourCc, e: &Element<'_>) -> Result<Value, Img4Error> {
        Ok(match e.tag {
            t if t == der::INTEGER => Value::Int(der::read_uint(e.value, e.value_offset)?),
            t if t == der::BOOLEAN => match e.value {
                [0] => Value::Bool(false),
                [0xFF] => Value::Bool(true),
                _ => {
                    return Err(DerError::BadValue {
                        offset: e.value_offset,
                        what: "BOOLEAN",
                    }
                    .into())
                }
            },
            t if t == der::OCTET_STRING => Value::Data(e.value.to_vec()),
            t if t == der::IA5_STRING => Value::Text(der::ia5(e)?),
            found => {
                return Err(Img4Error::ValueType {
                    tag: show(tag),
                    found,
                })
            }
        })
    }

    /// The integer, if it is one.
    pub fn as_int(&self) -> Option<u64> {
        match self {
            Value::Int(n) => Some(*n),
            _ => None,
        }
    }

    /// The bytes, if it is data.
    pub fn as_data(&self) -> Option<&[u8]> {
        match self {
            Value::Data(d) => Some(d),
            _ => None,
        }
    }

    /// The boolean, if it is one.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }
}

/// Properties by four-character name.
pub type Properties = BTreeMap<FourCc, Value>;

/// A tag for printing.
pub fn show(tag: FourCc) -> String {
    tag.iter().map(|b| char::from(*b)).collect()
}

/// Parses `"ibss"` into a [`FourCc`].
pub fn fourcc(text: &str) -> Option<FourCc> {
    let b = text.as_bytes();
    let arr: FourCc = b.try_into().ok()?;
    arr.is_ascii().then_some(arr)
}

fn tag_fourcc(t: Tag) -> Result<FourCc, Img4Error> {
    let f = t.fourcc();
    if t.class == 0xC0 && t.constructed && f.iter().all(|b| b.is_ascii_graphic()) {
        Ok(f)
    } else {
        Err(Img4Error::NotFourCc { number: t.number })
    }
}

fn encode_named(tag: FourCc, inner: &[u8]) -> Vec<u8> {
    let mut seq = der::element(der::IA5_STRING, &tag);
    seq.extend_from_slice(inner);
    der::element(Tag::private(tag), &der::element(der::SEQUENCE, &seq))
}

fn encode_properties(props: &Properties) -> Vec<u8> {
    let mut set = Vec::new();
    for (tag, v) in props {
        set.extend_from_slice(&encode_named(*tag, &v.encode()));
    }
    der::element(der::SET, &set)
}

/// `[PRIVATE tag] SEQUENCE { IA5String tag, <rest> }` → (tag, reader over rest).
fn decode_named<'a>(e: &Element<'a>) -> Result<(FourCc, Reader<'a>), Img4Error> {
    let tag = tag_fourcc(e.tag)?;
    let mut outer = e.reader();
    let seq = outer.expect(der::SEQUENCE, "SEQUENCE in a named entry")?;
    outer.finish("bytes after a named entry's SEQUENCE")?;
    let mut r = seq.reader();
    let name = r.expect(der::IA5_STRING, "IA5String name")?;
    if name.value != tag {
        return Err(Img4Error::NameMismatch {
            tag: show(tag),
            name: String::from_utf8_lossy(name.value)
                .chars()
                .take(16)
                .collect(),
        });
    }
    Ok((tag, r))
}

/// Properties of a SET; with `ordered`, they must come in ascending tag order (canonical
/// DER, so that re-encoding gives the same bytes).
fn decode_properties(set: &Element<'_>, ordered: bool) -> Result<Properties, Img4Error> {
    let set = set.expect(der::SET, "SET of properties")?;
    let mut r = set.reader();
    let mut props = Properties::new();
    while !r.is_empty() {
        let e = r.read()?;
        let (tag, mut inner) = decode_named(&e)?;
        let v = Value::decode(tag, &inner.read()?)?;
        inner.finish("bytes after a property value")?;
        if ordered && props.last_key_value().is_some_and(|(last, _)| *last > tag) {
            return Err(DerError::NotCanonical {
                offset: e.offset,
                what: "SET elements out of order",
            }
            .into());
        }
        if props.insert(tag, v).is_some() {
            return Err(Img4Error::Duplicate { tag: show(tag) });
        }
    }
    Ok(props)
}

fn magic(r: &mut Reader<'_>, expected: &'static str) -> Result<(), Img4Error> {
    let m = r.expect(der::IA5_STRING, "IA5String magic")?;
    if m.value == expected.as_bytes() {
        Ok(())
    } else {
        Err(Img4Error::Magic {
            expected,
            found: String::from_utf8_lossy(m.value).chars().take(16).collect(),
        })
    }
}

/// What a ticket says: `MANP` (the device's properties) and one entry per image tag.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ManifestBody {
    /// `MANP`: ECID, BNCH (the ApNonce), CHIP, BORD, SDOM, CPRO, CSEC, snon, ...
    pub manp: Properties,
    /// Images by tag (`ibss`, `krnl`, ...): DGST, EPRO, ESEC, ...
    pub images: BTreeMap<FourCc, Properties>,
}

impl ManifestBody {
    /// The DER of `SET { MANB }`: the bytes a ticket's signature covers.
    pub fn encode(&self) -> Vec<u8> {
        let mut set = encode_named(*b"MANP", &encode_properties(&self.manp));
        for (tag, props) in &self.images {
            if tag != b"MANP" {
                set.extend_from_slice(&encode_named(*tag, &encode_properties(props)));
            }
        }
        let manb = encode_named(*b"MANB", &der::element(der::SET, &set));
        der::element(der::SET, &manb)
    }

    fn decode(e: &Element<'_>) -> Result<ManifestBody, Img4Error> {
        let body = e.expect(der::SET, "SET { MANB }")?;
        let mut r = body.reader();
        let manb = r.read()?;
        r.finish("more than MANB in the manifest body")?;
        let (tag, mut inner) = decode_named(&manb)?;
        if tag != *b"MANB" {
            return Err(Img4Error::Magic {
                expected: "MANB",
                found: show(tag),
            });
        }
        let set = inner.expect(der::SET, "SET in MANB")?;
        inner.finish("bytes after MANB's SET")?;
        let mut out = ManifestBody::default();
        let mut entries = set.reader();
        let mut saw_manp = false;
        while !entries.is_empty() {
            let e = entries.read()?;
            let (tag, mut inner) = decode_named(&e)?;
            let props = decode_properties(&inner.read()?, false)?;
            inner.finish("bytes after an entry's properties")?;
            if tag == *b"MANP" {
                if saw_manp {
                    return Err(Img4Error::Duplicate { tag: show(tag) });
                }
                saw_manp = true;
                out.manp = props;
            } else if out.images.insert(tag, props).is_some() {
                return Err(Img4Error::Duplicate { tag: show(tag) });
            }
        }
        Ok(out)
    }

    /// `MANP.ECID`.
    pub fn ecid(&self) -> Option<u64> {
        self.manp.get(b"ECID").and_then(Value::as_int)
    }

    /// `MANP.BNCH`: the ApNonce the ticket is bound to.
    pub fn ap_nonce(&self) -> Option<&[u8]> {
        self.manp.get(b"BNCH").and_then(Value::as_data)
    }

    /// `MANP.CHIP`.
    pub fn chip_id(&self) -> Option<u64> {
        self.manp.get(b"CHIP").and_then(Value::as_int)
    }

    /// `MANP.BORD`.
    pub fn board_id(&self) -> Option<u64> {
        self.manp.get(b"BORD").and_then(Value::as_int)
    }

    /// The `DGST` the ticket lists for image `tag`.
    pub fn digest(&self, tag: FourCc) -> Option<&[u8]> {
        self.images
            .get(&tag)
            .and_then(|p| p.get(b"DGST"))
            .and_then(Value::as_data)
    }
}

/// A decoded IM4M (the ticket).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Im4m {
    /// The INTEGER after the magic (0).
    pub version: u64,
    /// What it says.
    pub body: ManifestBody,
    /// `SET { MANB }` exactly as it appeared (what the signature covers).
    signed: Vec<u8>,
    /// The signature.
    pub signature: Vec<u8>,
    /// The DER of the certificate-chain element, kept as is.
    pub cert_chain: Vec<u8>,
}

impl Im4m {
    /// A ticket for `body` signed with `signature` (over [`ManifestBody::encode`]).
    pub fn new(body: ManifestBody, signature: Vec<u8>, cert_chain: Vec<u8>) -> Im4m {
        let signed = body.encode();
        Im4m {
            version: 0,
            body,
            signed,
            signature,
            cert_chain,
        }
    }

    /// The bytes the signature covers.
    pub fn signed_bytes(&self) -> &[u8] {
        &self.signed
    }

    /// DER bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut seq = der::element(der::IA5_STRING, b"IM4M");
        seq.extend_from_slice(&der::element(der::INTEGER, &der::uint_bytes(self.version)));
        seq.extend_from_slice(&self.signed);
        seq.extend_from_slice(&der::element(der::OCTET_STRING, &self.signature));
        if self.cert_chain.is_empty() {
            seq.extend_from_slice(&der::element(der::SEQUENCE, &[]));
        } else {
            seq.extend_from_slice(&self.cert_chain);
        }
        der::element(der::SEQUENCE, &seq)
    }

    /// Decodes a whole IM4M (nothing may follow it).
    pub fn decode(data: &[u8]) -> Result<Im4m, Img4Error> {
        if data.len() > MAX_IM4M {
            return Err(Img4Error::TooLarge { len: data.len() });
        }
        let mut top = Reader::new(data);
        let e = top.expect(der::SEQUENCE, "IM4M SEQUENCE")?;
        top.finish("bytes after the IM4M")?;
        Im4m::decode_element(&e)
    }

    fn decode_element(e: &Element<'_>) -> Result<Im4m, Img4Error> {
        let mut r = e.reader();
        magic(&mut r, "IM4M")?;
        let v = r.expect(der::INTEGER, "IM4M version INTEGER")?;
        let version = der::read_uint(v.value, v.value_offset)?;
        let body_e = r.read()?;
        let body = ManifestBody::decode(&body_e)?;
        let sig = r.expect(der::OCTET_STRING, "IM4M signature OCTET STRING")?;
        let certs = r.expect(der::SEQUENCE, "IM4M certificate chain SEQUENCE")?;
        r.finish("bytes after the IM4M certificate chain")?;
        Ok(Im4m {
            version,
            body,
            signed: body_e.raw.to_vec(),
            signature: sig.value.to_vec(),
            cert_chain: certs.raw.to_vec(),
        })
    }
}

/// IM4R: restore information handed to the booting image (e.g. `BNCN`, the boot nonce).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Im4r {
    /// Its properties.
    pub properties: Properties,
}

impl Im4r {
    /// An IM4R carrying only `BNCN`, the boot-nonce generator (an INTEGER; the ApNonce the
    /// device advertises is derived from it).
    pub fn boot_nonce(generator: u64) -> Im4r {
        let mut properties = Properties::new();
        properties.insert(*b"BNCN", Value::Int(generator));
        Im4r { properties }
    }

    /// `BNCN`, when present.
    pub fn boot_nonce_generator(&self) -> Option<u64> {
        self.properties.get(b"BNCN").and_then(Value::as_int)
    }

    /// DER bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut seq = der::element(der::IA5_STRING, b"IM4R");
        seq.extend_from_slice(&encode_properties(&self.properties));
        der::element(der::SEQUENCE, &seq)
    }

    fn decode_element(e: &Element<'_>) -> Result<Im4r, Img4Error> {
        let mut r = e.expect(der::SEQUENCE, "IM4R SEQUENCE")?.reader();
        magic(&mut r, "IM4R")?;
        let properties = decode_properties(&r.read()?, true)?;
        r.finish("bytes after the IM4R properties")?;
        Ok(Im4r { properties })
    }
}

/// A personalized image: the IM4P as shipped plus the ticket (and restore info).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Img4 {
    /// The IM4P's DER, exactly as in the IPSW (its digest is what the ticket lists).
    pub im4p: Vec<u8>,
    /// The ticket.
    pub im4m: Im4m,
    /// Restore info, when given.
    pub im4r: Option<Im4r>,
}

impl Img4 {
    /// Stitches an IM4P (as read from the IPSW) with a ticket; fails if either is malformed.
    pub fn stitch(im4p: &[u8], ticket: &[u8], im4r: Option<Im4r>) -> Result<Img4, Img4Error> {
        check_im4p(im4p)?;
        Ok(Img4 {
            im4p: im4p.to_vec(),
            im4m: Im4m::decode(ticket)?,
            im4r,
        })
    }

    /// DER bytes (one copy of the IM4P).
    pub fn encode(&self) -> Vec<u8> {
        let magic = der::element(der::IA5_STRING, b"IMG4");
        let im4m = der::element(Tag::context(0), &self.im4m.encode());
        let im4r = self
            .im4r
            .as_ref()
            .map(|r| der::element(Tag::context(1), &r.encode()))
            .unwrap_or_default();
        let len = magic.len() + self.im4p.len() + im4m.len() + im4r.len();
        let mut out = Vec::with_capacity(der::header_len(der::SEQUENCE, len) + len);
        der::put_header(&mut out, der::SEQUENCE, len);
        out.extend_from_slice(&magic);
        out.extend_from_slice(&self.im4p);
        out.extend_from_slice(&im4m);
        out.extend_from_slice(&im4r);
        out
    }

    /// Decodes a whole IMG4.
    pub fn decode(data: &[u8]) -> Result<Img4, Img4Error> {
        let mut top = Reader::new(data);
        let e = top.expect(der::SEQUENCE, "IMG4 SEQUENCE")?;
        top.finish("bytes after the IMG4")?;
        let mut r = e.reader();
        magic(&mut r, "IMG4")?;
        let p = r.expect(der::SEQUENCE, "IM4P SEQUENCE")?;
        check_im4p(p.raw)?;
        let m = r.expect(Tag::context(0), "[0] IM4M")?;
        let mut mr = m.reader();
        let im4m_e = mr.expect(der::SEQUENCE, "IM4M SEQUENCE")?;
        mr.finish("bytes after the IM4M in [0]")?;
        if im4m_e.raw.len() > MAX_IM4M {
            return Err(Img4Error::TooLarge {
                len: im4m_e.raw.len(),
            });
        }
        let im4m = Im4m::decode_element(&im4m_e)?;
        let im4r = if r.is_empty() {
            None
        } else {
            let c = r.expect(Tag::context(1), "[1] IM4R")?;
            let mut cr = c.reader();
            let im4r = Im4r::decode_element(&cr.read()?)?;
            cr.finish("bytes after the IM4R in [1]")?;
            r.finish("bytes after the IM4R")?;
            Some(im4r)
        };
        Ok(Img4 {
            im4p: p.raw.to_vec(),
            im4m,
            im4r,
        })
    }

    /// The IM4P decoded (type, description, payload).
    pub fn payload(&self) -> Result<ipsw::Im4p, Img4Error> {
        ipsw::Im4p::decode(&self.im4p).map_err(Img4Error::Im4p)
    }
}

/// Checks, without copying the payload, that `data` is exactly one IM4P that
/// [`ipsw::Im4p::decode`] accepts: `SEQUENCE { "IM4P", IA5String, IA5String, OCTET STRING,
/// trailing elements with low tag numbers }`.
fn check_im4p(data: &[u8]) -> Result<(), Img4Error> {
    let mut top = Reader::new(data);
    let seq = top.expect(der::SEQUENCE, "IM4P SEQUENCE")?;
    top.finish("bytes after the IM4P")?;
    let mut r = seq.reader();
    magic(&mut r, "IM4P")?;
    der::ia5(&r.expect(der::IA5_STRING, "IM4P type IA5String")?)?;
    der::ia5(&r.expect(der::IA5_STRING, "IM4P description IA5String")?)?;
    r.expect(der::OCTET_STRING, "IM4P payload OCTET STRING")?;
    while !r.is_empty() {
        let e = r.read()?;
        if e.raw.first().is_some_and(|b| b & 0x1F == 0x1F) {
            return Err(DerError::NotCanonical {
                offset: e.offset,
                what: "IM4P trailer element with a long-form tag",
            }
            .into());
        }
    }
    Ok(())
}

/// The IM4M image tag of a BuildManifest component: `Info.Img4PayloadType` when the manifest
/// gives it, else the well-known tag of the component name.
pub fn component_tag(component: &ipsw::Component) -> Option<FourCc> {
    component
        .img4_payload_type
        .as_deref()
        .and_then(fourcc)
        .or_else(|| tag_for_name(&component.name))
}

/// The well-known IM4M tag of a component name (`iBSS` → `ibss`).
pub fn tag_for_name(name: &str) -> Option<FourCc> {
    const TABLE: &[(&str, &[u8; 4])] = &[
        ("iBSS", b"ibss"),
        ("iBEC", b"ibec"),
        ("LLB", b"illb"),
        ("iBoot", b"ibot"),
        ("iBootData", b"ibdt"),
        ("DeviceTree", b"dtre"),
        ("RestoreDeviceTree", b"rdtr"),
        ("KernelCache", b"krnl"),
        ("RestoreKernelCache", b"rkrn"),
        ("RestoreRamDisk", b"rdsk"),
        ("AppleLogo", b"logo"),
        ("RestoreLogo", b"rlgo"),
        ("RecoveryMode", b"recm"),
        ("BatteryCharging0", b"chg0"),
        ("BatteryCharging1", b"chg1"),
        ("BatteryFull", b"batF"),
        ("BatteryLow0", b"bat0"),
        ("BatteryLow1", b"bat1"),
        ("BatteryPlugin", b"glyP"),
        ("SEP", b"sepi"),
        ("RestoreSEP", b"rsep"),
        ("AOP", b"aopf"),
        ("Liquid", b"liqd"),
        ("StaticTrustCache", b"trst"),
        ("RestoreTrustCache", b"rtsc"),
        ("ANE", b"anef"),
        ("ANS", b"ansf"),
        ("AVE", b"avef"),
        ("GFX", b"gfxf"),
        ("ISP", b"ispf"),
        ("DCP", b"dcpf"),
        ("Ap,SystemVolumeCanonicalMetadata", b"msys"),
        ("ftap", b"ftap"),
        ("ftsp", b"ftsp"),
        ("rfta", b"rfta"),
        ("rfts", b"rfts"),
    ];
    TABLE.iter().find(|(n, _)| *n == name).map(|(_, t)| **t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn value() -> impl Strategy<Value = Value> {
        prop_oneof![
            any::<u64>().prop_map(Value::Int),
            any::<bool>().prop_map(Value::Bool),
            proptest::collection::vec(any::<u8>(), 0..64).prop_map(Value::Data),
            "[ -~]{0,24}".prop_map(Value::Text),
        ]
    }

    fn tag() -> impl Strategy<Value = FourCc> {
        "[A-Za-z0-9]{4}".prop_map(|s| fourcc(&s).unwrap_or(*b"XXXX"))
    }

    fn props() -> impl Strategy<Value = Properties> {
        proptest::collection::btree_map(tag(), value(), 0..8)
    }

    fn body() -> impl Strategy<Value = ManifestBody> {
        (
            props(),
            proptest::collection::btree_map(
                tag().prop_filter("not MANP", |t| t != b"MANP"),
                props(),
                0..6,
            ),
        )
            .prop_map(|(manp, images)| ManifestBody { manp, images })
    }

    proptest! {
        #[test]
        fn im4m_roundtrip(b in body(), sig in proptest::collection::vec(any::<u8>(), 0..80)) {
            let m = Im4m::new(b, sig, Vec::new());
            let der = m.encode();
            let back = Im4m::decode(&der).unwrap();
            prop_assert_eq!(back.encode(), der);
            prop_assert_eq!(&back.body, &m.body);
            prop_assert_eq!(back.signed_bytes(), m.signed_bytes());
        }

        #[test]
        fn img4_roundtrip(b in body(),
                          payload in proptest::collection::vec(any::<u8>(), 0..2000),
                          nonce in proptest::option::of(any::<u64>())) {
            let im4p = ipsw::Im4p::new("ibss", "test", payload).encode();
            let ticket = Im4m::new(b, vec![1, 2, 3], Vec::new()).encode();
            let img = Img4::stitch(&im4p, &ticket, nonce.map(Im4r::boot_nonce)).unwrap();
            let der = img.encode();
            let back = Img4::decode(&der).unwrap();
            prop_assert_eq!(&back, &img);
            prop_assert_eq!(back.encode(), der);
        }
    }

    proptest! {
        #[test]
        fn im4p_check_agrees_with_ipsw(
            payload in proptest::collection::vec(any::<u8>(), 0..300),
            at in any::<proptest::sample::Index>(),
            byte: u8,
        ) {
            let mut der = ipsw::Im4p::new("ibss", "x", payload).encode();
            let i = at.index(der.len());
            der[i] = byte;
            if check_im4p(&der).is_ok() {
                prop_assert!(ipsw::Im4p::decode(&der).is_ok());
            }
        }
    }

    #[test]
    fn truncations_are_errors() {
        let mut b = ManifestBody::default();
        b.manp.insert(*b"ECID", Value::Int(0x1234));
        b.images.insert(*b"ibss", {
            let mut p = Properties::new();
            p.insert(*b"DGST", Value::Data(vec![7; 48]));
            p
        });
        let im4p = ipsw::Im4p::new("ibss", "x", vec![9; 300]).encode();
        let ticket = Im4m::new(b, vec![5; 64], Vec::new()).encode();
        let img = Img4::stitch(
            &im4p,
            &ticket,
            Some(Im4r::boot_nonce(0x1111_1111_1111_1111)),
        )
        .unwrap()
        .encode();
        for cut in 0..img.len() {
            assert!(Img4::decode(&img[..cut]).is_err(), "cut at {cut}");
        }
        for cut in 0..ticket.len() {
            assert!(Im4m::decode(&ticket[..cut]).is_err(), "cut at {cut}");
        }
        assert_eq!(tag_for_name("iBSS"), Some(*b"ibss"));
        assert_eq!(tag_for_name("Nope"), None);
    }
}
