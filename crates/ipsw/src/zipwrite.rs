//! A small streaming zip writer (stored and deflated members, zip64 when sizes or offsets need
//! it). Members of any size are written from a generator in chunks, never held in memory; the
//! CRC is patched into the local header afterwards, so the output must be seekable.

use std::io::{self, Seek, SeekFrom, Write};

use crate::archive::Method;

const DOS_DATE: u16 = ((2026 - 1980) << 9) | (1 << 5) | 1;
const STREAM_CHUNK: usize = 1 << 20;

struct CdEntry {
    name: Vec<u8>,
    method: u16,
    crc32: u32,
    compressed: u64,
    uncompressed: u64,
    offset: u64,
}

/// A zip being written to `W`.
pub struct ZipWriter<W: Write + Seek> {
    out: W,
    pos: u64,
    entries: Vec<CdEntry>,
}

fn sat32(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

impl<W: Write + Seek> ZipWriter<W> {
    /// Start a zip at the current position 0 of `out`.
    pub fn new(out: W) -> Self {
        ZipWriter {
            out,
            pos: 0,
            entries: Vec::new(),
        }
    }

    fn local_header(
        &mut self,
        name: &[u8],
        method: u16,
        crc: u32,
        csize: u64,
        usize_: u64,
    ) -> io::Result<()> {
        let zip64 = csize >= u64::from(u32::MAX) || usize_ >= u64::from(u32::MAX);
        let mut h = Vec::with_capacity(30 + name.len() + 20);
        h.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
        h.extend_from_slice(&(if zip64 { 45u16 } else { 20 }).to_le_bytes());
        h.extend_from_slice(&0u16.to_le_bytes()); // flags
        h.extend_from_slice(&method.to_le_bytes());
        h.extend_from_slice(&0u16.to_le_bytes()); // time
        h.extend_from_slice(&DOS_DATE.to_le_bytes());
        h.extend_from_slice(&crc.to_le_bytes());
        if zip64 {
            h.extend_from_slice(&u32::MAX.to_le_bytes());
            h.extend_from_slice(&u32::MAX.to_le_bytes());
        } else {
            h.extend_from_slice(&sat32(csize).to_le_bytes());
            h.extend_from_slice(&sat32(usize_).to_le_bytes());
        }
        h.extend_from_slice(&(name.len() as u16).to_le_bytes());
        h.extend_from_slice(&(if zip64 { 20u16 } else { 0 }).to_le_bytes());
        h.extend_from_slice(name);
        if zip64 {
            h.extend_from_slice(&1u16.to_le_bytes());
            h.extend_from_slice(&16u16.to_le_bytes());
            h.extend_from_slice(&usize_.to_le_bytes());
            h.extend_from_slice(&csize.to_le_bytes());
        }
        self.out.write_all(&h)?;
        self.pos += h.len() as u64;
        Ok(())
    }

    /// Add a member from bytes in memory, stored or deflated.
    pub fn add_bytes(&mut self, name: &str, data: &[u8], method: Method) -> io::Result<()> {
        let crc = crc32fast::hash(data);
        let (code, body) = match method {
            Method::Stored => (0u16, std::borrow::Cow::Borrowed(data)),
            Method::Deflated => {
                let mut enc =
                    flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
                enc.write_all(data)?;
                (8u16, std::borrow::Cow::Owned(enc.finish()?))
            }
        };
        self.add_raw(name, code, crc, &body, data.len() as u64)
    }

    /// Add a member exactly as given (already compressed bytes, any declared size and CRC).
    /// Used to write hostile archives in tests.
    pub fn add_raw(
        &mut self,
        name: &str,
        method: u16,
        crc: u32,
        body: &[u8],
        declared: u64,
    ) -> io::Result<()> {
        let offset = self.pos;
        self.local_header(name.as_bytes(), method, crc, body.len() as u64, declared)?;
        self.out.write_all(body)?;
        self.pos += body.len() as u64;
        self.entries.push(CdEntry {
            name: name.as_bytes().to_vec(),
            method,
            crc32: crc,
            compressed: body.len() as u64,
            uncompressed: declared,
            offset,
        });
        Ok(())
    }

    /// Add a stored member of `len` bytes produced by `fill` in chunks; `seen` sees every
    /// chunk (e.g. to hash it).
    pub fn add_stream(
        &mut self,
        name: &str,
        len: u64,
        mut fill: impl FnMut(&mut [u8]),
        mut seen: impl FnMut(&[u8]),
    ) -> io::Result<()> {
        let offset = self.pos;
        self.local_header(name.as_bytes(), 0, 0, len, len)?;
        let mut crc = crc32fast::Hasher::new();
        let mut buf = vec![0u8; STREAM_CHUNK];
        let mut left = len;
        while left > 0 {
            let n = left.min(STREAM_CHUNK as u64) as usize;
            let chunk = &mut buf[..n];
            fill(chunk);
            crc.update(chunk);
            seen(chunk);
            self.out.write_all(chunk)?;
            left -= n as u64;
        }
        self.pos += len;
        let crc = crc.finalize();
        self.out.seek(SeekFrom::Start(offset + 14))?;
        self.out.write_all(&crc.to_le_bytes())?;
        self.out.seek(SeekFrom::Start(self.pos))?;
        self.entries.push(CdEntry {
            name: name.as_bytes().to_vec(),
            method: 0,
            crc32: crc,
            compressed: len,
            uncompressed: len,
            offset,
        });
        Ok(())
    }

    /// Write the central directory and end records; returns the output.
    pub fn finish(mut self) -> io::Result<W> {
        let cd_offset = self.pos;
        let mut cd = Vec::new();
        for e in &self.entries {
            let mut extra = Vec::new();
            if e.uncompressed >= u64::from(u32::MAX) {
                extra.extend_from_slice(&e.uncompressed.to_le_bytes());
            }
            if e.compressed >= u64::from(u32::MAX) {
                extra.extend_from_slice(&e.compressed.to_le_bytes());
            }
            if e.offset >= u64::from(u32::MAX) {
                extra.extend_from_slice(&e.offset.to_le_bytes());
            }
            let zip64 = !extra.is_empty();
            cd.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
            cd.extend_from_slice(&(0x0300u16 | 45).to_le_bytes()); // made by unix
            cd.extend_from_slice(&(if zip64 { 45u16 } else { 20 }).to_le_bytes());
            cd.extend_from_slice(&0u16.to_le_bytes());
            cd.extend_from_slice(&e.method.to_le_bytes());
            cd.extend_from_slice(&0u16.to_le_bytes());
            cd.extend_from_slice(&DOS_DATE.to_le_bytes());
            cd.extend_from_slice(&e.crc32.to_le_bytes());
            cd.extend_from_slice(&sat32(e.compressed).to_le_bytes());
            cd.extend_from_slice(&sat32(e.uncompressed).to_le_bytes());
            cd.extend_from_slice(&(e.name.len() as u16).to_le_bytes());
            cd.extend_from_slice(&(if zip64 { extra.len() as u16 + 4 } else { 0 }).to_le_bytes());
            cd.extend_from_slice(&0u16.to_le_bytes()); // comment
            cd.extend_from_slice(&0u16.to_le_bytes()); // disk
            cd.extend_from_slice(&0u16.to_le_bytes()); // internal attrs
            cd.extend_from_slice(&(0o100644u32 << 16).to_le_bytes());
            cd.extend_from_slice(&sat32(e.offset).to_le_bytes());
            cd.extend_from_slice(&e.name);
            if zip64 {
                cd.extend_from_slice(&1u16.to_le_bytes());
                cd.extend_from_slice(&(extra.len() as u16).to_le_bytes());
                cd.extend_from_slice(&extra);
            }
        }
        self.out.write_all(&cd)?;
        self.pos += cd.len() as u64;
        let count = self.entries.len() as u64;
        let cd_size = cd.len() as u64;
        let need64 =
            count >= 0xFFFF || cd_offset >= u64::from(u32::MAX) || cd_size >= u64::from(u32::MAX);
        let mut end = Vec::new();
        if need64 {
            let z64 = self.pos;
            end.extend_from_slice(&0x0606_4b50u32.to_le_bytes());
            end.extend_from_slice(&44u64.to_le_bytes());
            end.extend_from_slice(&45u16.to_le_bytes());
            end.extend_from_slice(&45u16.to_le_bytes());
            end.extend_from_slice(&0u32.to_le_bytes());
            end.extend_from_slice(&0u32.to_le_bytes());
            end.extend_from_slice(&count.to_le_bytes());
            end.extend_from_slice(&count.to_le_bytes());
            end.extend_from_slice(&cd_size.to_le_bytes());
            end.extend_from_slice(&cd_offset.to_le_bytes());
            end.extend_from_slice(&0x0706_4b50u32.to_le_bytes());
            end.extend_from_slice(&0u32.to_le_bytes());
            end.extend_from_slice(&z64.to_le_bytes());
            end.extend_from_slice(&1u32.to_le_bytes());
        }
        let count16 = if need64 { 0xFFFF } else { count as u16 };
        end.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
        end.extend_from_slice(&0u16.to_le_bytes());
        end.extend_from_slice(&0u16.to_le_bytes());
        end.extend_from_slice(&count16.to_le_bytes());
        end.extend_from_slice(&count16.to_le_bytes());
        end.extend_from_slice(&(if need64 { u32::MAX } else { sat32(cd_size) }).to_le_bytes());
        end.extend_from_slice(&(if need64 { u32::MAX } else { sat32(cd_offset) }).to_le_bytes());
        end.extend_from_slice(&0u16.to_le_bytes());
        self.out.write_all(&end)?;
        self.out.flush()?;
        Ok(self.out)
    }
}
