//! The token shard format: one file per corpus split, read by memory map.
//!
//! Layout (all integers little-endian):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `ISOFLOPS` |
//! | 8 | 4 | format version (1) |
//! | 12 | 4 | bytes per token: 2 (`u16`) or 4 (`u32`) |
//! | 16 | 4 | vocabulary size |
//! | 20 | 4 | reserved (0) |
//! | 24 | 8 | token count `T` |
//! | 32 | 8 | document count `D` |
//! | 40 | 8 | total UTF-8 bytes of the source text |
//! | 48 | 32 | SHA-256 of the token payload (the shard's identity) |
//! | 80 | 48 | reserved (0) |
//! | 128 | `T * width` | tokens |
//! | … | `8 * D` | token offset where each document starts |
//! | … | `8 * D` | UTF-8 bytes of each document (for bits-per-byte) |
//!
//! A shard is written to a temporary file, synced and renamed, so a reader never sees a
//! half-written one.

use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// File magic at offset 0.
pub const MAGIC: &[u8; 8] = b"ISOFLOPS";
/// Current format version.
pub const VERSION: u32 = 1;
/// Size of the fixed header in bytes.
pub const HEADER_LEN: usize = 128;

/// Errors reading or writing a shard; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: not an isoflop token shard ({reason})")]
    Format { path: PathBuf, reason: String },
    #[error("{path}: corrupt token shard: {reason} (prepare it again, or copy it again from its source)")]
    Corrupt { path: PathBuf, reason: String },
    #[error("token {token} does not fit the shard's {width}-byte tokens (vocabulary {vocab})")]
    TokenRange { token: u32, width: u32, vocab: u32 },
}

/// Width of one stored token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenDtype {
    U16,
    U32,
}

impl TokenDtype {
    /// The narrowest width that holds every id of a vocabulary.
    pub fn for_vocab(vocab: u32) -> Self {
        if vocab <= 1 << 16 { TokenDtype::U16 } else { TokenDtype::U32 }
    }
    /// Bytes per token.
    pub fn width(self) -> u32 {
        match self {
            TokenDtype::U16 => 2,
            TokenDtype::U32 => 4,
        }
    }
}

/// The decoded fixed header of a shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardHeader {
    pub version: u32,
    pub dtype: TokenDtype,
    pub vocab_size: u32,
    pub token_count: u64,
    pub doc_count: u64,
    pub byte_count: u64,
    /// Hex SHA-256 of the token payload.
    pub digest: String,
}

/// Streams documents into a new shard file.
pub struct ShardWriter {
    path: PathBuf,
    tmp: PathBuf,
    out: BufWriter<File>,
    dtype: TokenDtype,
    vocab: u32,
    hasher: Sha256,
    tokens: u64,
    doc_starts: Vec<u64>,
    doc_bytes: Vec<u64>,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ShardError + '_ {
    move |source| ShardError::Io { path: path.to_path_buf(), source }
}

impl ShardWriter {
    /// Starts a shard at `path` for a tokenizer with `vocab_size` ids.
    pub fn create(path: impl AsRef<Path>, vocab_size: u32) -> Result<Self, ShardError> {
        let path = path.as_ref().to_path_buf();
        let tmp = path.with_extension("bin.tmp");
        let file = File::create(&tmp).map_err(io_err(&tmp))?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        out.write_all(&[0u8; HEADER_LEN]).map_err(io_err(&tmp))?;
        Ok(Self {
            path,
            tmp,
            out,
            dtype: TokenDtype::for_vocab(vocab_size),
            vocab: vocab_size,
            hasher: Sha256::new(),
            tokens: 0,
            doc_starts: Vec::new(),
            doc_bytes: Vec::new(),
        })
    }

    /// Appends one document: its tokens (including any end-of-text token the tokenizer adds)
    /// and the number of UTF-8 bytes of text they encode.
    pub fn push_document(&mut self, tokens: &[u32], text_bytes: u64) -> Result<(), ShardError> {
        self.doc_starts.push(self.tokens);
        self.doc_bytes.push(text_bytes);
        let mut buf = Vec::with_capacity(tokens.len() * self.dtype.width() as usize);
        for &t in tokens {
            if t >= self.vocab {
                return Err(ShardError::TokenRange { token: t, width: self.dtype.width(), vocab: self.vocab });
            }
            match self.dtype {
                TokenDtype::U16 => buf.extend_from_slice(&(t as u16).to_le_bytes()),
                TokenDtype::U32 => buf.extend_from_slice(&t.to_le_bytes()),
            }
        }
        self.hasher.update(&buf);
        self.out.write_all(&buf).map_err(io_err(&self.tmp))?;
        self.tokens += tokens.len() as u64;
        Ok(())
    }

    /// Writes the document tables and the header, syncs and renames into place.
    pub fn finish(mut self) -> Result<ShardHeader, ShardError> {
        let tmp = self.tmp.clone();
        for v in self.doc_starts.iter().chain(self.doc_bytes.iter()) {
            self.out.write_all(&v.to_le_bytes()).map_err(io_err(&tmp))?;
        }
        let header = ShardHeader {
            version: VERSION,
            dtype: self.dtype,
            vocab_size: self.vocab,
            token_count: self.tokens,
            doc_count: self.doc_starts.len() as u64,
            byte_count: self.doc_bytes.iter().sum(),
            digest: hex::encode(self.hasher.finalize_reset()),
        };
        let mut file = self.out.into_inner().map_err(|e| ShardError::Io { path: tmp.clone(), source: e.into_error() })?;
        use std::io::Seek;
        file.seek(std::io::SeekFrom::Start(0)).map_err(io_err(&tmp))?;
        file.write_all(&encode_header(&header)).map_err(io_err(&tmp))?;
        file.sync_all().map_err(io_err(&tmp))?;
        drop(file);
        std::fs::rename(&tmp, &self.path).map_err(io_err(&self.path))?;
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty())
            && let Ok(d) = File::open(dir)
        {
            let _ = d.sync_all();
        }
        Ok(header)
    }
}

fn encode_header(h: &ShardHeader) -> [u8; HEADER_LEN] {
    let mut b = [0u8; HEADER_LEN];
    b[0..8].copy_from_slice(MAGIC);
    b[8..12].copy_from_slice(&h.version.to_le_bytes());
    b[12..16].copy_from_slice(&h.dtype.width().to_le_bytes());
    b[16..20].copy_from_slice(&h.vocab_size.to_le_bytes());
    b[24..32].copy_from_slice(&h.token_count.to_le_bytes());
    b[32..40].copy_from_slice(&h.doc_count.to_le_bytes());
    b[40..48].copy_from_slice(&h.byte_count.to_le_bytes());
    let digest = hex::decode(&h.digest).expect("digest is hex");
    b[48..80].copy_from_slice(&digest);
    b
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// A read-only, memory-mapped shard.
pub struct Shard {
    path: PathBuf,
    header: ShardHeader,
    map: memmap2::Mmap,
}

impl std::fmt::Debug for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shard").field("path", &self.path).field("header", &self.header).finish()
    }
}

impl Shard {
    /// Opens and validates a shard.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, ShardError> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(io_err(&path))?;
        // SAFETY: shards are written once to a temporary file and renamed into place; isoflop
        // never modifies a shard after that, so the mapped bytes do not change under us.
        #[allow(unsafe_code)]
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io_err(&path))?;
        let bad = |reason: String| ShardError::Format { path: path.clone(), reason };
        if map.len() < HEADER_LEN || &map[0..8] != MAGIC {
            return Err(bad("missing ISOFLOPS magic".into()));
        }
        let version = u32_at(&map, 8);
        if version != VERSION {
            return Err(bad(format!("format version {version}, this build reads {VERSION}")));
        }
        let dtype = match u32_at(&map, 12) {
            2 => TokenDtype::U16,
            4 => TokenDtype::U32,
            w => return Err(bad(format!("token width {w}, expected 2 or 4"))),
        };
        let header = ShardHeader {
            version,
            dtype,
            vocab_size: u32_at(&map, 16),
            token_count: u64_at(&map, 24),
            doc_count: u64_at(&map, 32),
            byte_count: u64_at(&map, 40),
            digest: hex::encode(&map[48..80]),
        };
        let expected = HEADER_LEN as u64 + header.token_count * dtype.width() as u64 + 16 * header.doc_count;
        if map.len() as u64 != expected {
            return Err(bad(format!("file is {} bytes, header implies {expected}", map.len())));
        }
        Ok(Self { path, header, map })
    }

    /// Path the shard was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// The decoded header.
    pub fn header(&self) -> &ShardHeader {
        &self.header
    }
    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.header.token_count as usize
    }
    /// True when the shard holds no tokens.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn payload(&self) -> &[u8] {
        let end = HEADER_LEN + self.len() * self.header.dtype.width() as usize;
        &self.map[HEADER_LEN..end]
    }

    /// Token at position `i`.
    pub fn token(&self, i: usize) -> u32 {
        let p = self.payload();
        match self.header.dtype {
            TokenDtype::U16 => u16::from_le_bytes([p[2 * i], p[2 * i + 1]]) as u32,
            TokenDtype::U32 => u32_at(p, 4 * i),
        }
    }

    /// Copies `out.len()` tokens starting at `start` into `out` as `i64` (libtorch's index type).
    pub fn read_into(&self, start: usize, out: &mut [i64]) {
        let p = self.payload();
        let n = out.len();
        assert!(start + n <= self.len(), "window {start}+{n} past shard end {}", self.len());
        match self.header.dtype {
            TokenDtype::U16 => {
                for (o, c) in out.iter_mut().zip(p[2 * start..2 * (start + n)].chunks_exact(2)) {
                    *o = u16::from_le_bytes([c[0], c[1]]) as i64;
                }
            }
            TokenDtype::U32 => {
                for (o, c) in out.iter_mut().zip(p[4 * start..4 * (start + n)].chunks_exact(4)) {
                    *o = u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64;
                }
            }
        }
    }

    /// Token offset where each document starts.
    pub fn doc_starts(&self) -> Vec<u64> {
        self.table(0)
    }
    /// UTF-8 bytes of each document.
    pub fn doc_bytes(&self) -> Vec<u64> {
        self.table(1)
    }
    fn table(&self, which: usize) -> Vec<u64> {
        let d = self.header.doc_count as usize;
        let base = HEADER_LEN + self.len() * self.header.dtype.width() as usize + which * 8 * d;
        (0..d).map(|i| u64_at(&self.map, base + 8 * i)).collect()
    }

    /// Recomputes the payload digest and compares it with the header.
    pub fn verify(&self) -> Result<(), ShardError> {
        let got = hex::encode(Sha256::digest(self.payload()));
        if got != self.header.digest {
            return Err(ShardError::Corrupt {
                path: self.path.clone(),
                reason: format!("payload digest {got} does not match its header's {}", self.header.digest),
            });
        }
        Ok(())
    }

    /// [`Shard::verify`], once per file per machine: a marker in `cache` (see
    /// [`verify_cache_dir`]) remembers a verified file by its path, size, modification time
    /// and digest, so a shard rewritten in place (even at the same size) is hashed again.
    /// `Ok(true)` when it hashed, `Ok(false)` when the marker said it had before. Without a
    /// cache directory it hashes every time.
    pub fn verify_once(&self, cache: Option<&Path>) -> Result<bool, ShardError> {
        let marker = self.marker(cache)?;
        if marker.as_ref().is_some_and(|(m, _)| m.is_file()) {
            return Ok(false);
        }
        self.verify()?;
        remember(marker);
        Ok(true)
    }

    /// [`Shard::verify`] always, then the marker [`Shard::verify_once`] reads.
    pub fn verify_and_remember(&self, cache: Option<&Path>) -> Result<(), ShardError> {
        let marker = self.marker(cache)?;
        self.verify()?;
        remember(marker);
        Ok(())
    }

    /// This file's marker in `cache`, and the canonical path it records.
    fn marker(&self, cache: Option<&Path>) -> Result<Option<(PathBuf, PathBuf)>, ShardError> {
        let Some(cache) = cache else { return Ok(None) };
        let meta = std::fs::metadata(&self.path).map_err(io_err(&self.path))?;
        let mtime = meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map_or(0, |d| d.as_nanos());
        let canon = std::fs::canonicalize(&self.path).unwrap_or_else(|_| self.path.clone());
        let key = format!("{}\n{}\n{mtime}\n{}", canon.display(), meta.len(), self.header.digest);
        Ok(Some((cache.join(hex::encode(&Sha256::digest(key.as_bytes())[..16])), canon)))
    }
}

/// Writes a marker (best effort: an unwritable cache only means hashing again next time).
fn remember(marker: Option<(PathBuf, PathBuf)>) {
    if let Some((m, canon)) = marker {
        let _ = std::fs::create_dir_all(m.parent().expect("a marker has a directory"))
            .and_then(|_| std::fs::write(&m, format!("{}\n", canon.display())));
    }
}

/// Where [`Shard::verify_once`] keeps its markers: `verified-shards` in [`crate::cache_dir`].
pub fn verify_cache_dir() -> Option<PathBuf> {
    crate::cache_dir().map(|d| d.join("verified-shards"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(vocab: u32, docs: &[(Vec<u32>, u64)]) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.bin");
        let mut w = ShardWriter::create(&path, vocab).unwrap();
        for (t, b) in docs {
            w.push_document(t, *b).unwrap();
        }
        let h = w.finish().unwrap();
        let s = Shard::open(&path).unwrap();
        assert_eq!(s.header(), &h);
        let all: Vec<u32> = docs.iter().flat_map(|(t, _)| t.clone()).collect();
        assert_eq!(s.len(), all.len());
        for (i, t) in all.iter().enumerate() {
            assert_eq!(s.token(i), *t);
        }
        let mut out = vec![0i64; all.len()];
        s.read_into(0, &mut out);
        assert_eq!(out, all.iter().map(|&t| t as i64).collect::<Vec<_>>());
        let mut starts = Vec::new();
        let mut acc = 0;
        for (t, _) in docs {
            starts.push(acc);
            acc += t.len() as u64;
        }
        assert_eq!(s.doc_starts(), starts);
        assert_eq!(s.doc_bytes(), docs.iter().map(|d| d.1).collect::<Vec<_>>());
        assert_eq!(h.byte_count, docs.iter().map(|d| d.1).sum::<u64>());
        s.verify().unwrap();
        assert!(!path.with_extension("bin.tmp").exists());
    }

    #[test]
    fn round_trip_u16_and_u32() {
        round_trip(259, &[(vec![1, 2, 258], 2), (vec![], 0), (vec![7; 1000], 1000)]);
        assert_eq!(TokenDtype::for_vocab(50257), TokenDtype::U16);
        round_trip(128_256, &[(vec![128_255, 0, 70_000], 11), (vec![5], 1)]);
        assert_eq!(TokenDtype::for_vocab(128_256), TokenDtype::U32);
    }

    #[test]
    fn rejects_out_of_range_token_and_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.bin");
        let mut w = ShardWriter::create(&path, 10).unwrap();
        assert!(matches!(w.push_document(&[10], 1), Err(ShardError::TokenRange { .. })));
        w.push_document(&[1, 2, 3], 3).unwrap();
        w.finish().unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[HEADER_LEN] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let err = Shard::open(&path).unwrap().verify().unwrap_err().to_string();
        assert!(err.contains("digest"), "{err}");
        std::fs::write(&path, b"nope").unwrap();
        let err = Shard::open(&path).unwrap_err().to_string();
        assert!(err.contains("magic") && err.contains("s.bin"), "{err}");
    }

    /// Issue 12, defect 2: a shard is hashed once per machine, and again once rewritten, even
    /// at the same size.
    #[test]
    fn verify_once_remembers_a_file_until_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache");
        let path = dir.path().join("s.bin");
        let mut w = ShardWriter::create(&path, 10).unwrap();
        w.push_document(&[1, 2, 3], 3).unwrap();
        w.finish().unwrap();
        assert!(Shard::open(&path).unwrap().verify_once(Some(&cache)).unwrap(), "hashed the first time");
        assert!(!Shard::open(&path).unwrap().verify_once(Some(&cache)).unwrap(), "remembered");
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[HEADER_LEN] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let later = std::time::SystemTime::now() + std::time::Duration::from_secs(5);
        std::fs::File::options().write(true).open(&path).unwrap().set_modified(later).unwrap();
        let err = Shard::open(&path).unwrap().verify_once(Some(&cache)).unwrap_err();
        assert!(matches!(err, ShardError::Corrupt { .. }) && err.to_string().contains("s.bin"), "{err}");
        assert!(Shard::open(&path).unwrap().verify_once(None).is_err(), "no cache: hashed every time");
    }
}
