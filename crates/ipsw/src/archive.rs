//! The zip container of an IPSW, read defensively: the central directory (zip64 too) is parsed
//! into a list of [`Member`]s with the byte range of each member's data, and anything a hostile
//! archive could use is refused up front: unsafe names (zip-slip), duplicates, overlapping
//! data, impossible compression ratios, encryption, ranges past the end.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use crate::error::Error;

/// Deflate cannot expand more than about 1032:1; a declared ratio above this is a lie.
pub const MAX_COMPRESSION_RATIO: u64 = 1100;
/// Refuse central directories with more entries than any IPSW has.
pub const MAX_MEMBERS: u64 = 200_000;
/// Refuse central directories larger than this.
pub const MAX_CENTRAL_DIRECTORY: u64 = 64 << 20;

const SIG_LOCAL: u32 = 0x0403_4b50;
const SIG_CENTRAL: u32 = 0x0201_4b50;
const SIG_EOCD: u32 = 0x0605_4b50;
const SIG_ZIP64_EOCD: u32 = 0x0606_4b50;
const SIG_ZIP64_LOCATOR: u32 = 0x0706_4b50;

/// Something member bytes can be read from at an offset (a file, or bytes in memory).
pub trait ReadAt {
    /// Fill `buf` from `offset`; an error if the source is shorter.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()>;
}

impl ReadAt for std::fs::File {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(self, buf, offset)
    }
}

impl ReadAt for [u8] {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        let src = start
            .checked_add(buf.len())
            .and_then(|end| self.get(start..end))
            .ok_or(std::io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

/// How a member is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Method {
    /// Uncompressed: the data range is the member's bytes.
    Stored,
    /// Raw deflate.
    Deflated,
}

/// One member of the archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The name, validated safe.
    pub name: String,
    /// Stored or deflated.
    pub method: Method,
    /// Bytes in the archive.
    pub compressed_size: u64,
    /// Bytes once inflated.
    pub uncompressed_size: u64,
    /// CRC-32 of the inflated bytes.
    pub crc32: u32,
    /// Offset of the local header.
    pub header_offset: u64,
    /// Offset of the member's data.
    pub data_offset: u64,
}

impl Member {
    /// End of the member's data (exclusive).
    pub fn data_end(&self) -> u64 {
        self.data_offset + self.compressed_size
    }
}

/// The parsed layout of a zip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Archive {
    members: Vec<Member>,
    index: HashMap<String, usize>,
    /// Total length of the archive.
    pub len: u64,
}

struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn new(data: &'a [u8]) -> Self {
        Cursor { data, pos: 0 }
    }
    fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.data.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(s)
    }
    fn u16(&mut self) -> Option<u16> {
        self.bytes(2).map(|b| u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Option<u32> {
        let b = self.bytes(4)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Option<u64> {
        let b = self.bytes(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Some(u64::from_le_bytes(a))
    }
}

/// Is this member name safe to extract under a folder?
pub fn is_safe_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('/')
        && !name.contains('\\')
        && !name.contains('\0')
        && !name.split('/').any(|part| part == "..")
        && name.as_bytes().get(1) != Some(&b':')
}

impl Archive {
    /// Parse the central directory of the zip in `src` (`len` bytes) and every member's local
    /// header. `path` is only for error messages.
    pub fn read<R: ReadAt + ?Sized>(src: &R, len: u64, path: &Path) -> Result<Archive, Error> {
        let zerr = |reason: String| Error::Zip {
            path: path.to_path_buf(),
            reason,
        };
        let read = |offset: u64, n: usize| -> Result<Vec<u8>, Error> {
            let mut buf = vec![0u8; n];
            src.read_exact_at(&mut buf, offset)
                .map_err(|e| zerr(format!("cannot read {n} bytes at {offset}: {e}")))?;
            Ok(buf)
        };
        if len < 22 {
            return Err(zerr(format!("{len} bytes is too short for a zip")));
        }
        let tail_len = len.min(22 + 65_535);
        let tail_start = len - tail_len;
        let tail = read(tail_start, tail_len as usize)?;
        let eocd_rel = (0..=tail.len() - 22)
            .rev()
            .find(|&i| tail.get(i..i + 4) == Some(&SIG_EOCD.to_le_bytes()[..]))
            .ok_or_else(|| zerr("no end-of-central-directory record (truncated?)".into()))?;
        let eocd_pos = tail_start + eocd_rel as u64;
        let mut c = Cursor::new(tail.get(eocd_rel + 4..).unwrap_or(&[]));
        let short = || zerr("end-of-central-directory record cut short".into());
        let _disk = c.u16().ok_or_else(short)?;
        let _cd_disk = c.u16().ok_or_else(short)?;
        let _entries_disk = c.u16().ok_or_else(short)?;
        let mut entries = u64::from(c.u16().ok_or_else(short)?);
        let mut cd_size = u64::from(c.u32().ok_or_else(short)?);
        let mut cd_offset = u64::from(c.u32().ok_or_else(short)?);
        if entries == 0xFFFF || cd_size == 0xFFFF_FFFF || cd_offset == 0xFFFF_FFFF {
            if eocd_pos < 20 {
                return Err(zerr("zip64 locator missing".into()));
            }
            let loc = read(eocd_pos - 20, 20)?;
            let mut c = Cursor::new(&loc);
            if c.u32() != Some(SIG_ZIP64_LOCATOR) {
                return Err(zerr("zip64 locator missing".into()));
            }
            let _disk = c.u32();
            let z64 = c.u64().ok_or_else(short)?;
            if z64.checked_add(56).is_none_or(|end| end > eocd_pos) {
                return Err(zerr(format!("zip64 record offset {z64} out of range")));
            }
            let rec = read(z64, 56)?;
            let mut c = Cursor::new(&rec);
            if c.u32() != Some(SIG_ZIP64_EOCD) {
                return Err(zerr("bad zip64 end-of-central-directory signature".into()));
            }
            let _size = c.u64();
            let _versions = c.u32();
            let _disks = c.u64();
            let _entries_disk = c.u64();
            entries = c.u64().ok_or_else(short)?;
            cd_size = c.u64().ok_or_else(short)?;
            cd_offset = c.u64().ok_or_else(short)?;
        }
        if entries > MAX_MEMBERS {
            return Err(zerr(format!(
                "{entries} entries is more than {MAX_MEMBERS}"
            )));
        }
        if cd_size > MAX_CENTRAL_DIRECTORY {
            return Err(zerr(format!(
                "central directory of {cd_size} bytes is too large"
            )));
        }
        if cd_offset
            .checked_add(cd_size)
            .is_none_or(|end| end > eocd_pos)
        {
            return Err(zerr(format!(
                "central directory at {cd_offset}+{cd_size} runs past the end record at {eocd_pos} (truncated?)"
            )));
        }
        let cd = read(cd_offset, cd_size as usize)?;
        let mut c = Cursor::new(&cd);
        let mut members = Vec::with_capacity(entries as usize);
        let mut index = HashMap::new();
        for n in 0..entries {
            let bad = || zerr(format!("central directory entry {n} cut short"));
            if c.u32() != Some(SIG_CENTRAL) {
                return Err(zerr(format!(
                    "central directory entry {n} has a bad signature"
                )));
            }
            let _made = c.u16().ok_or_else(bad)?;
            let _needed = c.u16().ok_or_else(bad)?;
            let flags = c.u16().ok_or_else(bad)?;
            let method = c.u16().ok_or_else(bad)?;
            let _time = c.u32().ok_or_else(bad)?;
            let crc32 = c.u32().ok_or_else(bad)?;
            let mut csize = u64::from(c.u32().ok_or_else(bad)?);
            let mut usize_ = u64::from(c.u32().ok_or_else(bad)?);
            let name_len = c.u16().ok_or_else(bad)? as usize;
            let extra_len = c.u16().ok_or_else(bad)? as usize;
            let comment_len = c.u16().ok_or_else(bad)? as usize;
            let _disk = c.u16().ok_or_else(bad)?;
            let _int = c.u16().ok_or_else(bad)?;
            let _ext = c.u32().ok_or_else(bad)?;
            let mut header_offset = u64::from(c.u32().ok_or_else(bad)?);
            let name_bytes = c.bytes(name_len).ok_or_else(bad)?;
            let extra = c.bytes(extra_len).ok_or_else(bad)?;
            c.bytes(comment_len).ok_or_else(bad)?;
            let name = String::from_utf8_lossy(name_bytes).into_owned();
            if !is_safe_name(&name) {
                return Err(Error::UnsafeMemberName { name });
            }
            // zip64 extended information: only the fields saturated in the record, in order.
            let mut e = Cursor::new(extra);
            while let (Some(id), Some(size)) = (e.u16(), e.u16()) {
                let body = e.bytes(size as usize).ok_or_else(bad)?;
                if id == 0x0001 {
                    let mut z = Cursor::new(body);
                    if usize_ == 0xFFFF_FFFF {
                        usize_ = z.u64().ok_or_else(bad)?;
                    }
                    if csize == 0xFFFF_FFFF {
                        csize = z.u64().ok_or_else(bad)?;
                    }
                    if header_offset == 0xFFFF_FFFF {
                        header_offset = z.u64().ok_or_else(bad)?;
                    }
                }
            }
            let method = match (method, flags & 1) {
                (0, 0) => Method::Stored,
                (8, 0) => Method::Deflated,
                (m, _) => return Err(Error::UnsupportedMember { name, method: m }),
            };
            if method == Method::Stored && csize != usize_ {
                return Err(Error::MemberData {
                    name,
                    reason: format!(
                        "stored member with {csize} bytes stored but {usize_} declared"
                    ),
                });
            }
            if method == Method::Deflated
                && usize_ > (1 << 20)
                && usize_ / csize.max(1) > MAX_COMPRESSION_RATIO
            {
                return Err(Error::CompressionRatio {
                    name,
                    compressed: csize,
                    uncompressed: usize_,
                    limit: MAX_COMPRESSION_RATIO,
                });
            }
            if index.insert(name.clone(), members.len()).is_some() {
                return Err(Error::DuplicateMember { name });
            }
            members.push(Member {
                name,
                method,
                compressed_size: csize,
                uncompressed_size: usize_,
                crc32,
                header_offset,
                data_offset: 0,
            });
        }
        // Local headers: where each member's data starts.
        for m in &mut members {
            if m.header_offset
                .checked_add(30)
                .is_none_or(|end| end > cd_offset)
            {
                return Err(zerr(format!(
                    "local header of {:?} is out of range",
                    m.name
                )));
            }
            let lh = read(m.header_offset, 30)?;
            let mut c = Cursor::new(&lh);
            if c.u32() != Some(SIG_LOCAL) {
                return Err(zerr(format!(
                    "local header of {:?} has a bad signature",
                    m.name
                )));
            }
            c.bytes(22);
            let (Some(n), Some(e)) = (c.u16(), c.u16()) else {
                return Err(zerr(format!("local header of {:?} cut short", m.name)));
            };
            let local_name = read(m.header_offset + 30, n as usize)?;
            if local_name != m.name.as_bytes() {
                return Err(Error::MemberData {
                    name: m.name.clone(),
                    reason: "local header names a different member".into(),
                });
            }
            m.data_offset = m.header_offset + 30 + u64::from(n) + u64::from(e);
            if m.data_offset
                .checked_add(m.compressed_size)
                .is_none_or(|end| end > cd_offset)
            {
                return Err(zerr(format!(
                    "data of {:?} ({} bytes at {}) runs past the central directory (truncated?)",
                    m.name, m.compressed_size, m.data_offset
                )));
            }
        }
        let mut order: Vec<&Member> = members.iter().collect();
        order.sort_by_key(|m| m.header_offset);
        for w in order.windows(2) {
            if let [a, b] = w {
                if a.data_end() > b.header_offset {
                    return Err(Error::OverlappingMembers {
                        first: a.name.clone(),
                        second: b.name.clone(),
                    });
                }
            }
        }
        Ok(Archive {
            members,
            index,
            len,
        })
    }

    /// Open and parse the zip at `path`.
    pub fn open(path: &Path) -> Result<(std::fs::File, Archive), Error> {
        let file = std::fs::File::open(path).map_err(Error::io("open", path))?;
        let len = file.metadata().map_err(Error::io("stat", path))?.len();
        let archive = Archive::read(&file, len, path)?;
        Ok((file, archive))
    }

    /// Members in central-directory order.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// The member called `name`.
    pub fn member(&self, name: &str) -> Option<&Member> {
        self.index.get(name).and_then(|&i| self.members.get(i))
    }

    /// A streaming reader of member `name`'s inflated bytes, read straight from `src` (no
    /// copy of the member anywhere): what ASR streams a multi-gigabyte OS image from. The
    /// reader fails with `InvalidData` if the member inflates to another size than declared.
    pub fn member_reader<'a, R: ReadAt + ?Sized>(
        &self,
        src: &'a R,
        name: &str,
    ) -> Result<MemberReader<'a, R>, Error> {
        let m = self.member(name).ok_or_else(|| Error::NoSuchMember {
            name: name.to_owned(),
        })?;
        let window = Window {
            src,
            pos: m.data_offset,
            end: m.data_end(),
        };
        let inner = match m.method {
            Method::Stored => Inner::Stored(window),
            Method::Deflated => Inner::Deflated(Box::new(flate2::read::DeflateDecoder::new(
                std::io::BufReader::with_capacity(64 << 10, window),
            ))),
        };
        Ok(MemberReader {
            inner,
            left: m.uncompressed_size,
        })
    }

    /// Read one (small) member whole, inflating and checking its CRC; refuses members larger
    /// than `limit`.
    pub fn read_member<R: ReadAt + ?Sized>(
        &self,
        src: &R,
        name: &str,
        limit: u64,
    ) -> Result<Vec<u8>, Error> {
        let m = self.member(name).ok_or_else(|| Error::NoSuchMember {
            name: name.to_owned(),
        })?;
        let size = m.uncompressed_size.max(m.compressed_size);
        if size > limit {
            return Err(Error::MemberTooLarge {
                name: name.to_owned(),
                size,
                limit,
            });
        }
        let mut raw = vec![0u8; m.compressed_size as usize];
        src.read_exact_at(&mut raw, m.data_offset)
            .map_err(|e| Error::MemberData {
                name: name.to_owned(),
                reason: format!("cannot read: {e}"),
            })?;
        let data = match m.method {
            Method::Stored => raw,
            Method::Deflated => {
                let mut out = Vec::with_capacity(m.uncompressed_size as usize);
                flate2::read::DeflateDecoder::new(raw.as_slice())
                    .take(m.uncompressed_size + 1)
                    .read_to_end(&mut out)
                    .map_err(|e| Error::MemberData {
                        name: name.to_owned(),
                        reason: format!("deflate data does not inflate: {e}"),
                    })?;
                if out.len() as u64 != m.uncompressed_size {
                    return Err(Error::MemberData {
                        name: name.to_owned(),
                        reason: format!(
                            "inflates to {}{} bytes, {} declared",
                            if out.len() as u64 > m.uncompressed_size {
                                "more than "
                            } else {
                                ""
                            },
                            out.len(),
                            m.uncompressed_size
                        ),
                    });
                }
                out
            }
        };
        let actual = crc32fast::hash(&data);
        if actual != m.crc32 {
            return Err(Error::Crc {
                name: name.to_owned(),
                expected: m.crc32,
                actual,
            });
        }
        Ok(data)
    }
}

/// A window of a [`ReadAt`] source, read in order.
struct Window<'a, R: ?Sized> {
    src: &'a R,
    pos: u64,
    end: u64,
}

impl<R: ReadAt + ?Sized> Read for Window<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.end.saturating_sub(self.pos);
        let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
        let Some(dst) = buf.get_mut(..n) else {
            return Ok(0);
        };
        if n == 0 {
            return Ok(0);
        }
        self.src.read_exact_at(dst, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

enum Inner<'a, R: ?Sized> {
    Stored(Window<'a, R>),
    Deflated(Box<flate2::read::DeflateDecoder<std::io::BufReader<Window<'a, R>>>>),
}

/// The inflated bytes of one member, streamed (see [`Archive::member_reader`]).
pub struct MemberReader<'a, R: ?Sized> {
    inner: Inner<'a, R>,
    left: u64,
}

impl<R: ?Sized> std::fmt::Debug for MemberReader<'_, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemberReader")
            .field("left", &self.left)
            .finish_non_exhaustive()
    }
}

impl<R: ?Sized> MemberReader<'_, R> {
    /// Bytes not yet read.
    pub fn remaining(&self) -> u64 {
        self.left
    }
}

impl<R: ReadAt + ?Sized> MemberReader<'_, R> {
    /// Skips up to `n` bytes; how many were skipped (fewer only at the member's end). A
    /// stored member (an IPSW's OS image is stored) moves its position without reading; a
    /// deflated one inflates what it skips.
    pub fn skip(&mut self, n: u64) -> std::io::Result<u64> {
        let n = n.min(self.left);
        match &mut self.inner {
            Inner::Stored(w) => {
                let n = n.min(w.end.saturating_sub(w.pos));
                w.pos += n;
                self.left -= n;
                Ok(n)
            }
            Inner::Deflated(_) => std::io::copy(&mut self.by_ref().take(n), &mut std::io::sink()),
        }
    }
}

impl<R: ReadAt + ?Sized> Read for MemberReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let want = usize::try_from(self.left)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let Some(dst) = buf.get_mut(..want) else {
            return Ok(0);
        };
        let n = match &mut self.inner {
            Inner::Stored(w) => w.read(dst)?,
            Inner::Deflated(d) => d.read(dst)?,
        };
        if n == 0 && want > 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("member ends {} bytes short of its declared size", self.left),
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsafe_names() {
        for bad in [
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a\\b",
            "C:/x",
            "a\0b",
            "",
        ] {
            assert!(!is_safe_name(bad), "{bad:?}");
        }
        for good in [
            "BuildManifest.plist",
            "Firmware/dfu/iBSS.d64.RELEASE.im4p",
            "a..b/c",
        ] {
            assert!(is_safe_name(good), "{good:?}");
        }
    }

    #[test]
    fn skip_seeks_a_stored_member_and_inflates_a_deflated_one() {
        use std::io::Write;
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        for (name, method) in [
            ("stored", zip::CompressionMethod::Stored),
            ("deflated", zip::CompressionMethod::Deflated),
        ] {
            let options = zip::write::SimpleFileOptions::default().compression_method(method);
            zip.start_file(name, options).expect("start");
            zip.write_all(&data).expect("write");
        }
        let bytes = zip.finish().expect("finish").into_inner();
        let archive = Archive::read(bytes.as_slice(), bytes.len() as u64, Path::new("t.zip"))
            .expect("archive");
        for name in ["stored", "deflated"] {
            let mut r = archive
                .member_reader(bytes.as_slice(), name)
                .expect("reader");
            assert_eq!(r.skip(150_001).expect("skip"), 150_001, "{name}");
            let mut rest = Vec::new();
            r.read_to_end(&mut rest).expect("rest");
            assert_eq!(rest, data[150_001..], "{name}");
            let mut r = archive
                .member_reader(bytes.as_slice(), name)
                .expect("reader");
            assert_eq!(r.skip(1 << 40).expect("skip"), data.len() as u64, "{name}");
            assert_eq!(r.remaining(), 0, "{name}");
        }
    }

    #[test]
    fn not_a_zip() {
        let p = Path::new("x.ipsw");
        assert!(matches!(
            Archive::read(&b"hello"[..], 5, p),
            Err(Error::Zip { .. })
        ));
        let junk = vec![0u8; 1000];
        assert!(matches!(
            Archive::read(junk.as_slice(), 1000, p),
            Err(Error::Zip { .. })
        ));
    }
}
