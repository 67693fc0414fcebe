//! Component digests: the algorithm follows from the digest's length (20 bytes SHA-1, 32 bytes
//! SHA-256, 48 bytes SHA-384), never from the chip.

use std::fmt;

use sha1::Digest as _;

use crate::error::Error;

/// A hash algorithm a BuildManifest digest (or a published whole-file hash) can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum Algorithm {
    /// 20-byte SHA-1 (A8-era manifests, Apple's catalog hashes).
    Sha1,
    /// 32-byte SHA-256.
    Sha256,
    /// 48-byte SHA-384 (img4 manifests from the A10 on).
    Sha384,
}

impl Algorithm {
    /// Every algorithm, in length order.
    pub const ALL: [Algorithm; 3] = [Algorithm::Sha1, Algorithm::Sha256, Algorithm::Sha384];

    /// The digest length in bytes.
    pub const fn digest_len(self) -> usize {
        match self {
            Algorithm::Sha1 => 20,
            Algorithm::Sha256 => 32,
            Algorithm::Sha384 => 48,
        }
    }

    /// The algorithm whose digests are `len` bytes long.
    pub fn from_len(len: usize) -> Option<Algorithm> {
        Algorithm::ALL.into_iter().find(|a| a.digest_len() == len)
    }

    /// A streaming hasher for this algorithm.
    pub fn hasher(self) -> Hasher {
        match self {
            Algorithm::Sha1 => Hasher::Sha1(sha1::Sha1::new()),
            Algorithm::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            Algorithm::Sha384 => Hasher::Sha384(sha2::Sha384::new()),
        }
    }

    /// The digest of `data` in one call.
    pub fn digest(self, data: &[u8]) -> Digest {
        let mut h = self.hasher();
        h.update(data);
        h.finish()
    }

    /// Lower-case name as printed (`sha1`, `sha256`, `sha384`).
    pub const fn name(self) -> &'static str {
        match self {
            Algorithm::Sha1 => "sha1",
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha384 => "sha384",
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A digest whose algorithm is known from its length.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Digest {
    algorithm: Algorithm,
    bytes: Vec<u8>,
}

impl Digest {
    /// A digest from raw bytes; the length must be 20, 32 or 48.
    pub fn from_bytes(bytes: &[u8]) -> Result<Digest, Error> {
        let algorithm =
            Algorithm::from_len(bytes.len()).ok_or(Error::DigestLength { len: bytes.len() })?;
        Ok(Digest {
            algorithm,
            bytes: bytes.to_vec(),
        })
    }

    /// A digest from hex text (as given on the command line or in a catalog).
    pub fn from_hex(text: &str) -> Result<Digest, Error> {
        let bytes = hex::decode(text.trim()).map_err(|_| Error::DigestHex {
            text: text.to_owned(),
        })?;
        Digest::from_bytes(&bytes)
    }

    /// The algorithm, from the length.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The raw digest bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Lower-case hex.
    pub fn to_hex(&self) -> String {
        hex::encode(&self.bytes)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm, self.to_hex())
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

/// A streaming hasher of any [`Algorithm`].
#[derive(Clone)]
pub enum Hasher {
    /// SHA-1.
    Sha1(sha1::Sha1),
    /// SHA-256.
    Sha256(sha2::Sha256),
    /// SHA-384.
    Sha384(sha2::Sha384),
}

impl Hasher {
    /// Feed bytes.
    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha1(h) => h.update(data),
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha384(h) => h.update(data),
        }
    }

    /// The algorithm.
    pub fn algorithm(&self) -> Algorithm {
        match self {
            Hasher::Sha1(_) => Algorithm::Sha1,
            Hasher::Sha256(_) => Algorithm::Sha256,
            Hasher::Sha384(_) => Algorithm::Sha384,
        }
    }

    /// The digest of everything fed so far.
    pub fn finish(self) -> Digest {
        let (algorithm, bytes) = match self {
            Hasher::Sha1(h) => (Algorithm::Sha1, h.finalize().to_vec()),
            Hasher::Sha256(h) => (Algorithm::Sha256, h.finalize().to_vec()),
            Hasher::Sha384(h) => (Algorithm::Sha384, h.finalize().to_vec()),
        };
        Digest { algorithm, bytes }
    }
}

impl fmt::Debug for Hasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hasher({})", self.algorithm())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn algorithm_follows_length() {
        assert_eq!(
            Digest::from_bytes(&[0; 20]).unwrap().algorithm(),
            Algorithm::Sha1
        );
        assert_eq!(
            Digest::from_bytes(&[0; 32]).unwrap().algorithm(),
            Algorithm::Sha256
        );
        assert_eq!(
            Digest::from_bytes(&[0; 48]).unwrap().algorithm(),
            Algorithm::Sha384
        );
        assert!(matches!(
            Digest::from_bytes(&[0; 16]),
            Err(Error::DigestLength { len: 16 })
        ));
    }

    #[test]
    fn known_answers() {
        assert_eq!(
            Algorithm::Sha1.digest(b"abc").to_hex(),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
        assert_eq!(
            Algorithm::Sha256.digest(b"abc").to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(Algorithm::Sha384
            .digest(b"abc")
            .to_hex()
            .starts_with("cb00753f45a35e8b"));
        assert!(matches!(
            Digest::from_hex("zz"),
            Err(Error::DigestHex { .. })
        ));
    }
}
