//! The dossier's zip container, read strictly from a seekable file: our
//! own reader of the central directory (APPNOTE 6.3.x), because the
//! `zip` crate keeps one entry per name and does not say where local
//! headers and the central directory disagree, which is how a forged copy
//! hides beside the genuine one. The `zip` crate still writes dossiers.
//!
//! Refused, each with a message naming the entry: a name twice in the
//! central directory; a local header that disagrees with its central
//! record (name, flags, method, CRC, sizes; a data descriptor must agree
//! too); bytes before the first local header, between entries, between
//! the last entry and the central directory, or after the end record
//! beyond its comment; encryption; methods other than stored and deflate;
//! zip64 (a dossier is far smaller than 4 GiB, so a zip64 record is not
//! ours); extra fields other than timestamps and Unix owners (an Info-ZIP
//! Unicode path field is a second name other readers extract under), or of
//! other kinds in the local header than in the central record; names
//! outside the container; a directory entry with data.
//!
//! Memory is bounded: every entry is decompressed once, streaming, when
//! the container is opened, to check its size and CRC-32 and to take its
//! SHA-256, counted against a per-entry cap ([`MAX_ENTRY`]) and a total
//! cap ([`Limits::max_total`]) while decompressing; afterwards an entry is
//! loaded whole only on request, against the caller's cap for its kind.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::io::{Read, Seek, SeekFrom};

/// Largest uncompressed entry.
pub const MAX_ENTRY: u64 = 256 << 20;
/// The default total of all entries uncompressed.
pub const DEFAULT_MAX_TOTAL: u64 = 512 << 20;
/// Largest central directory read (a dossier has tens of entries).
const MAX_CENTRAL: u64 = 4 << 20;
/// Most entries read.
const MAX_ENTRIES: usize = 20_000;

const LOCAL_SIG: u32 = 0x0403_4b50;
const CENTRAL_SIG: u32 = 0x0201_4b50;
const END_SIG: u32 = 0x0605_4b50;
const ZIP64_LOCATOR_SIG: u32 = 0x0706_4b50;
const DESCRIPTOR_SIG: u32 = 0x0807_4b50;
const FLAG_ENCRYPTED: u16 = 1;
const FLAG_DESCRIPTOR: u16 = 1 << 3;
const FLAG_STRONG_ENCRYPTION: u16 = 1 << 6;
const FLAG_MASKED_HEADERS: u16 = 1 << 13;
const ZIP64_EXTRA: u16 = 0x0001;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ContainerError {
    /// No end-of-central-directory record, or one that makes no sense.
    #[error("not a zip container: {0}")]
    NotZip(String),
    /// What is wrong with one entry.
    #[error("entry {name:?}: {why}")]
    Entry { name: String, why: String },
    /// Bytes outside every entry, the central directory and the end record.
    #[error("{0}")]
    Layout(String),
    #[error("zip64 is not read: a dossier is far smaller than 4 GiB, so a zip64 record is not one of ours ({0})")]
    Zip64(String),
    #[error("the entries uncompress to more than {cap} bytes together (the total cap, --max-total), reached at entry {name:?}")]
    Total { name: String, cap: u64 },
    #[error("reading the container: {0}")]
    Io(#[from] std::io::Error),
}

fn entry_err(name: &str, why: impl Into<String>) -> ContainerError {
    ContainerError::Entry {
        name: name.to_owned(),
        why: why.into(),
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// All entries together, uncompressed.
    pub max_total: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_total: DEFAULT_MAX_TOTAL,
        }
    }
}

/// One entry, as its central record and local header agree it is.
#[derive(Debug, Clone)]
pub struct Entry {
    pub name: String,
    /// Stored (0) or deflate (8).
    pub method: u16,
    /// The extra fields of its central record and local header are empty.
    pub no_extra: bool,
    pub size: u64,
    pub sha256: [u8; 32],
    compressed: u64,
    crc: u32,
    data: u64,
}

impl Entry {
    pub fn stored(&self) -> bool {
        self.method == 0
    }
    pub fn is_dir(&self) -> bool {
        self.name.ends_with('/')
    }
}

/// An opened container: its entries in the order of the file.
pub struct Container<R> {
    file: RefCell<R>,
    entries: Vec<Entry>,
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn read_at<R: Read + Seek>(f: &mut R, at: u64, n: usize) -> Result<Vec<u8>, std::io::Error> {
    f.seek(SeekFrom::Start(at))?;
    let mut b = vec![0; n];
    f.read_exact(&mut b)?;
    Ok(b)
}

/// A name must stay inside the container when extracted.
fn name_outside(name: &str) -> bool {
    name.is_empty()
        || name.starts_with('/')
        || name.contains('\\')
        || name.contains('\0')
        || name.as_bytes().get(1) == Some(&b':')
        || name.split('/').enumerate().any(|(i, p)| {
            p == ".." || p == "." || (p.is_empty() && i + 1 != name.split('/').count())
        })
}

/// Extra fields that change nothing a reader takes from the entry:
/// times (extended timestamp 0x5455, NTFS 0x000a) and Unix owners
/// (0x7875). Every other one is refused: the Info-ZIP Unicode path
/// (0x7075) and comment (0x6375) fields give an entry a second name or
/// comment that unzip, 7-Zip and libarchive use instead of the one the
/// seal covers, and zip64 (0x0001) is not ours.
const HARMLESS_EXTRA: [u16; 3] = [0x5455, 0x000a, 0x7875];
const UNICODE_PATH_EXTRA: u16 = 0x7075;
const UNICODE_COMMENT_EXTRA: u16 = 0x6375;

/// The ids of an extra field's records, in order, each checked: zip64 and
/// anything but [`HARMLESS_EXTRA`] refused, records that run past the
/// field refused.
fn extra_ids(name: &str, extra: &[u8], what: &str) -> Result<Vec<u16>, ContainerError> {
    let mut ids = Vec::new();
    let mut at = 0;
    while at < extra.len() {
        if at + 4 > extra.len() {
            return Err(entry_err(
                name,
                format!("its {what}'s extra field ends in the middle of a record header"),
            ));
        }
        let id = u16_at(extra, at);
        let len = u16_at(extra, at + 2) as usize;
        if at + 4 + len > extra.len() {
            return Err(entry_err(
                name,
                format!("its {what}'s extra field record {id:#06x} runs past the field"),
            ));
        }
        match id {
            ZIP64_EXTRA => return Err(ContainerError::Zip64(format!("entry {name:?}"))),
            UNICODE_PATH_EXTRA => {
                let path = extra
                    .get(at + 9..at + 4 + len)
                    .map(String::from_utf8_lossy)
                    .unwrap_or_default();
                return Err(entry_err(
                    name,
                    format!(
                        "its {what} carries an Info-ZIP Unicode path field (0x7075) naming it {path:?}: a second name, which unzip and 7-Zip extract it under, that the seal does not cover"
                    ),
                ));
            }
            UNICODE_COMMENT_EXTRA => {
                return Err(entry_err(
                    name,
                    format!(
                        "its {what} carries an Info-ZIP Unicode comment field (0x6375): a second comment that the seal does not cover"
                    ),
                ))
            }
            id if HARMLESS_EXTRA.contains(&id) => ids.push(id),
            id => {
                return Err(entry_err(
                    name,
                    format!(
                        "its {what} carries an extra field {id:#06x}, which is not read: only timestamps (0x5455, 0x000a) and Unix owners (0x7875) are allowed"
                    ),
                ))
            }
        }
        at += 4 + len;
    }
    Ok(ids)
}

fn ids_text(ids: &[u16]) -> String {
    if ids.is_empty() {
        return "none".into();
    }
    ids.iter()
        .map(|i| format!("{i:#06x}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The central record as read, before the local header is compared.
struct Central {
    name: String,
    /// Version needed, modification time and date: a local header
    /// repeats them, and one that differs was not written with it.
    version: u16,
    time: (u16, u16),
    flags: u16,
    method: u16,
    crc: u32,
    compressed: u64,
    size: u64,
    local: u64,
    extra_empty: bool,
    /// The ids of its extra field's records, each one allowed.
    extra_ids: Vec<u16>,
}

impl<R: Read + Seek> Container<R> {
    /// Reads the central directory, compares every local header with it,
    /// checks that the entries tile the file, and decompresses each entry
    /// once (size, CRC-32, SHA-256) within the caps.
    pub fn open(mut file: R, limits: Limits) -> Result<Container<R>, ContainerError> {
        let len = file.seek(SeekFrom::End(0))?;
        let (cd_offset, cd_size, count) = end_record(&mut file, len)?;
        if cd_size > MAX_CENTRAL || count > MAX_ENTRIES {
            return Err(ContainerError::NotZip(format!(
                "a central directory of {cd_size} bytes and {count} entries: more than a dossier has"
            )));
        }
        let cd = read_at(&mut file, cd_offset, cd_size as usize)?;
        let mut centrals = Vec::with_capacity(count);
        let mut names = BTreeSet::new();
        let mut at = 0usize;
        for i in 0..count {
            if at + 46 > cd.len() || u32_at(&cd, at) != CENTRAL_SIG {
                return Err(ContainerError::NotZip(format!(
                    "central directory record {} is not where the end record says",
                    i + 1
                )));
            }
            let n = u16_at(&cd, at + 28) as usize;
            let e = u16_at(&cd, at + 30) as usize;
            let k = u16_at(&cd, at + 32) as usize;
            let end = at + 46 + n + e + k;
            if end > cd.len() {
                return Err(ContainerError::NotZip(format!(
                    "central directory record {} runs past the directory",
                    i + 1
                )));
            }
            let name = std::str::from_utf8(&cd[at + 46..at + 46 + n])
                .map_err(|_| {
                    ContainerError::NotZip(format!("entry {}: its name is not UTF-8", i + 1))
                })?
                .to_owned();
            let extra = &cd[at + 46 + n..at + 46 + n + e];
            let c = Central {
                version: u16_at(&cd, at + 6),
                time: (u16_at(&cd, at + 12), u16_at(&cd, at + 14)),
                flags: u16_at(&cd, at + 8),
                method: u16_at(&cd, at + 10),
                crc: u32_at(&cd, at + 16),
                compressed: u32_at(&cd, at + 20) as u64,
                size: u32_at(&cd, at + 24) as u64,
                local: u32_at(&cd, at + 42) as u64,
                extra_empty: extra.is_empty(),
                extra_ids: Vec::new(),
                name,
            };
            let disk = u16_at(&cd, at + 34);
            // The file type in a Unix host's external attributes: what an
            // unzip makes of the entry. Anything but a plain file (or
            // none said) is a way out of the container the seal does not
            // see: a symbolic link, a device, a pipe.
            let made_on_unix = u16_at(&cd, at + 4) >> 8 == 3;
            let kind = (u32_at(&cd, at + 38) >> 16) & 0o170000;
            // (A directory is refused below, for what it is.)
            if made_on_unix && ![0, 0o100000, 0o040000].contains(&kind) {
                return Err(entry_err(
                    &c.name,
                    format!(
                        "is marked as a {} in its attributes, not a plain file",
                        if kind == 0o120000 {
                            "symbolic link"
                        } else {
                            "special file"
                        }
                    ),
                ));
            }
            let mut c = c;
            c.extra_ids = extra_ids(&c.name, extra, "central record")?;
            let name = &c.name;
            if c.compressed == 0xFFFF_FFFF || c.size == 0xFFFF_FFFF || c.local == 0xFFFF_FFFF {
                return Err(ContainerError::Zip64(format!("entry {name:?}")));
            }
            if disk != 0 {
                return Err(entry_err(name, "is on another disk of a split archive"));
            }
            if name_outside(name) {
                return Err(entry_err(name, "has a path outside the container"));
            }
            if !names.insert(name.clone()) {
                return Err(entry_err(
                    name,
                    "is in the central directory twice: which copy is meant cannot be told",
                ));
            }
            if c.flags & (FLAG_ENCRYPTED | FLAG_STRONG_ENCRYPTION | FLAG_MASKED_HEADERS) != 0 {
                return Err(entry_err(name, "is encrypted"));
            }
            if c.method != 0 && c.method != 8 {
                return Err(entry_err(
                    name,
                    format!(
                        "is compressed with method {}: only stored (0) and deflate (8) are read",
                        c.method
                    ),
                ));
            }
            if name.ends_with('/') && (c.size != 0 || c.compressed > 2) {
                return Err(entry_err(name, "is a directory entry with data"));
            }
            if c.size > MAX_ENTRY {
                return Err(entry_err(
                    name,
                    format!(
                        "its record says {} bytes uncompressed, more than the {MAX_ENTRY} bytes an entry may have",
                        c.size
                    ),
                ));
            }
            centrals.push(c);
            at = end;
        }
        if at != cd.len() {
            return Err(ContainerError::Layout(format!(
                "{} bytes in the central directory after its {count} records",
                cd.len() - at
            )));
        }
        // The declared sizes alone may already say no, before any work.
        let mut declared = 0u64;
        for c in &centrals {
            declared = declared.saturating_add(c.size);
            if declared > limits.max_total {
                return Err(ContainerError::Total {
                    name: c.name.clone(),
                    cap: limits.max_total,
                });
            }
        }

        // The entries, in the order of the file, must tile it from byte 0
        // to the central directory.
        centrals.sort_by_key(|c| c.local);
        let mut entries = Vec::with_capacity(centrals.len());
        let mut next = 0u64;
        for c in centrals {
            let name = &c.name;
            if c.local > next {
                return Err(ContainerError::Layout(if next == 0 {
                    format!(
                        "{} bytes before the first local header (entry {name:?}): not a container of ours",
                        c.local
                    )
                } else {
                    format!(
                        "{} bytes between the end of the previous entry and entry {name:?}",
                        c.local - next
                    )
                }));
            }
            if c.local < next {
                return Err(entry_err(name, "overlaps the entry before it"));
            }
            if c.local.saturating_add(30) > cd_offset {
                return Err(entry_err(
                    name,
                    "its local header is past the central directory",
                ));
            }
            let h = read_at(&mut file, c.local, 30)?;
            if u32_at(&h, 0) != LOCAL_SIG {
                return Err(entry_err(
                    name,
                    "no local header where its central record says",
                ));
            }
            let n = u16_at(&h, 26) as u64;
            let e = u16_at(&h, 28) as u64;
            let data = c.local + 30 + n + e;
            if data > cd_offset {
                return Err(entry_err(
                    name,
                    "its local header runs into the central directory",
                ));
            }
            let tail = read_at(&mut file, c.local + 30, (n + e) as usize)?;
            let local_name = &tail[..n as usize];
            let local_extra = &tail[n as usize..];
            if local_name != name.as_bytes() {
                return Err(entry_err(
                    name,
                    format!(
                        "its local header names it {:?}: the local header and the central directory disagree",
                        String::from_utf8_lossy(local_name)
                    ),
                ));
            }
            // The same kinds of record in both: a field only one of
            // them has is read by some readers and not by others.
            let local_ids = extra_ids(name, local_extra, "local header")?;
            if local_ids != c.extra_ids {
                return Err(entry_err(
                    name,
                    format!(
                        "its local header's extra fields ({}) are not its central record's ({})",
                        ids_text(&local_ids),
                        ids_text(&c.extra_ids)
                    ),
                ));
            }
            let (flags, method) = (u16_at(&h, 6), u16_at(&h, 8));
            if flags != c.flags {
                return Err(entry_err(
                    name,
                    format!(
                        "its local header's flags ({flags:#06x}) are not its central record's ({:#06x})",
                        c.flags
                    ),
                ));
            }
            if method != c.method {
                return Err(entry_err(
                    name,
                    format!(
                        "its local header says method {method}, its central record {}",
                        c.method
                    ),
                ));
            }
            if (u16_at(&h, 4), (u16_at(&h, 10), u16_at(&h, 12))) != (c.version, c.time) {
                return Err(entry_err(
                    name,
                    "its local header's version or time is not its central record's",
                ));
            }
            let local = (u32_at(&h, 14), u32_at(&h, 18) as u64, u32_at(&h, 22) as u64);
            let mut end = data.saturating_add(c.compressed);
            if end > cd_offset {
                return Err(entry_err(name, "its data runs into the central directory"));
            }
            if flags & FLAG_DESCRIPTOR == 0 {
                disagree(name, local, &c, "local header")?;
            } else {
                // CRC and sizes follow the data; the local header may
                // carry zeros or the same values, nothing else.
                if local != (0, 0, 0) {
                    disagree(name, local, &c, "local header")?;
                }
                let d = read_at(&mut file, end, 16.min((cd_offset - end) as usize))?;
                let d = if d.len() >= 4 && u32_at(&d, 0) == DESCRIPTOR_SIG {
                    end += 4;
                    &d[4..]
                } else {
                    &d[..]
                };
                if d.len() < 12 {
                    return Err(entry_err(name, "its data descriptor is cut short"));
                }
                disagree(
                    name,
                    (u32_at(d, 0), u32_at(d, 4) as u64, u32_at(d, 8) as u64),
                    &c,
                    "data descriptor",
                )?;
                end += 12;
            }
            next = end;
            entries.push(Entry {
                name: c.name,
                method: c.method,
                no_extra: c.extra_empty && local_extra.is_empty(),
                size: c.size,
                sha256: [0; 32],
                compressed: c.compressed,
                crc: c.crc,
                data,
            });
        }
        if next != cd_offset {
            return Err(ContainerError::Layout(if next < cd_offset {
                format!(
                    "{} bytes between the last entry and the central directory",
                    cd_offset - next
                )
            } else {
                "the last entry overlaps the central directory".to_owned()
            }));
        }

        let c = Container {
            file: RefCell::new(file),
            entries,
        };
        let mut total = 0u64;
        let mut sums = Vec::with_capacity(c.entries.len());
        for e in &c.entries {
            let mut h = openssl::sha::Sha256::new();
            let mut crc = crc32fast::Hasher::new();
            c.stream(e, &mut total, limits.max_total, |chunk| {
                h.update(chunk);
                crc.update(chunk);
                Ok(())
            })?;
            if crc.finalize() != e.crc {
                return Err(entry_err(
                    &e.name,
                    "its CRC-32 is not the one its records say: damaged",
                ));
            }
            sums.push(h.finish());
        }
        let mut c = c;
        for (e, s) in c.entries.iter_mut().zip(sums) {
            e.sha256 = s;
        }
        Ok(c)
    }

    /// The entries, in the order of the file.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    pub fn entry(&self, name: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.name == name)
    }

    /// An entry's bytes, if it is there and within `cap` (the largest a
    /// file of its kind may be).
    pub fn load(&self, name: &str, cap: u64) -> Option<Result<Vec<u8>, ContainerError>> {
        let e = self.entry(name)?;
        if e.size > cap {
            return Some(Err(entry_err(
                name,
                format!(
                    "{} bytes, more than the {cap} bytes a file of its kind may have",
                    e.size
                ),
            )));
        }
        let mut out = Vec::with_capacity(e.size as usize);
        let mut total = 0;
        Some(
            self.stream(e, &mut total, cap, |b| {
                out.extend_from_slice(b);
                Ok(())
            })
            .map(|_| out),
        )
    }

    /// Each line of an entry (without its `\n`), read streaming, none
    /// longer than `max_line`; `each` may stop the reading with its error.
    pub fn for_each_line(
        &self,
        name: &str,
        max_line: usize,
        mut each: impl FnMut(usize, &[u8]) -> Result<(), String>,
    ) -> Option<Result<(), String>> {
        let e = self.entry(name)?;
        let mut line = Vec::new();
        let mut n = 0usize;
        let mut stopped: Option<String> = None;
        let mut total = 0;
        let mut feed = |b: &[u8], line: &mut Vec<u8>| -> Result<(), ContainerError> {
            for part in b.split_inclusive(|&x| x == b'\n') {
                let (body, ends) = match part.strip_suffix(b"\n") {
                    Some(body) => (body, true),
                    None => (part, false),
                };
                if line.len() + body.len() > max_line {
                    stopped = Some(format!("line {} is longer than {max_line} bytes", n + 1));
                    return Err(ContainerError::Layout(String::new()));
                }
                line.extend_from_slice(body);
                if ends {
                    n += 1;
                    if let Err(why) = each(n, line) {
                        stopped = Some(why);
                        return Err(ContainerError::Layout(String::new()));
                    }
                    line.clear();
                }
            }
            Ok(())
        };
        let r = self.stream(e, &mut total, e.size, |b| feed(b, &mut line));
        let r = match r {
            Ok(()) if !line.is_empty() => feed(b"\n", &mut line),
            r => r,
        };
        Some(match (r, stopped) {
            (_, Some(why)) => Err(why),
            (Err(e), None) => Err(e.to_string()),
            (Ok(()), None) => Ok(()),
        })
    }

    /// Decompresses `e` in chunks to `sink`, adding to `total` and
    /// refusing past `cap` or past the size its records declare.
    fn stream(
        &self,
        e: &Entry,
        total: &mut u64,
        cap: u64,
        mut sink: impl FnMut(&[u8]) -> Result<(), ContainerError>,
    ) -> Result<(), ContainerError> {
        let mut f = self.file.borrow_mut();
        f.seek(SeekFrom::Start(e.data))?;
        let raw = (&mut *f).take(e.compressed);
        let mut buf = vec![0u8; 64 << 10];
        let mut count = 0u64;
        let mut pump = |r: &mut dyn Read| -> Result<(), ContainerError> {
            loop {
                let n = match r.read(&mut buf) {
                    Ok(0) => return Ok(()),
                    Ok(n) => n,
                    Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(err) => {
                        return Err(entry_err(&e.name, format!("cannot be decompressed: {err}")))
                    }
                };
                count += n as u64;
                *total += n as u64;
                if count > e.size {
                    return Err(entry_err(
                        &e.name,
                        format!(
                            "uncompresses to more than the {} bytes its records say",
                            e.size
                        ),
                    ));
                }
                if *total > cap {
                    return Err(ContainerError::Total {
                        name: e.name.clone(),
                        cap,
                    });
                }
                sink(&buf[..n])?;
            }
        };
        if e.method == 0 {
            if e.compressed != e.size {
                return Err(entry_err(
                    &e.name,
                    "stored, yet its compressed and uncompressed sizes differ",
                ));
            }
            pump(&mut { raw })?;
        } else {
            let mut d = flate2::read::DeflateDecoder::new(raw);
            pump(&mut d)?;
            if d.total_in() != e.compressed {
                return Err(entry_err(
                    &e.name,
                    format!(
                        "its deflate stream ends after {} of its {} bytes",
                        d.total_in(),
                        e.compressed
                    ),
                ));
            }
        }
        if count != e.size {
            return Err(entry_err(
                &e.name,
                format!("uncompresses to {count} bytes, its records say {}", e.size),
            ));
        }
        Ok(())
    }
}

/// Where a local header or a data descriptor disagrees with the central
/// record: CRC, compressed size, size.
fn disagree(
    name: &str,
    got: (u32, u64, u64),
    c: &Central,
    what: &str,
) -> Result<(), ContainerError> {
    let (crc, compressed, size) = got;
    let why = if crc != c.crc {
        format!(
            "its {what}'s CRC-32 ({crc:08x}) is not its central record's ({:08x})",
            c.crc
        )
    } else if compressed != c.compressed {
        format!(
            "its {what} says {compressed} bytes compressed, its central record {}",
            c.compressed
        )
    } else if size != c.size {
        format!(
            "its {what} says {size} bytes, its central record {}",
            c.size
        )
    } else {
        return Ok(());
    };
    Err(entry_err(name, why))
}

/// The end of central directory record: (offset and size of the central
/// directory, number of entries). Nothing may follow it but its comment.
fn end_record<R: Read + Seek>(f: &mut R, len: u64) -> Result<(u64, u64, usize), ContainerError> {
    if len < 22 {
        return Err(ContainerError::NotZip(format!(
            "{len} bytes: too short for a zip's end record"
        )));
    }
    let back = len.min(22 + 0xFFFF);
    let tail = read_at(f, len - back, back as usize)?;
    let mut found = None;
    let mut last_sig = None;
    for at in (0..=tail.len() - 22).rev() {
        if u32_at(&tail, at) != END_SIG {
            continue;
        }
        last_sig.get_or_insert(at);
        let comment = u16_at(&tail, at + 20) as usize;
        if at + 22 + comment == tail.len() {
            found = Some(at);
            break;
        }
    }
    let at = match (found, last_sig) {
        (Some(at), _) => at,
        (None, Some(at)) => {
            let comment = u16_at(&tail, at + 20) as usize;
            return Err(ContainerError::Layout(format!(
                "{} bytes after the end of central directory record, beyond its {comment}-byte comment",
                (tail.len() - at - 22).saturating_sub(comment)
            )));
        }
        (None, None) => {
            return Err(ContainerError::NotZip(
                "no end of central directory record".into(),
            ))
        }
    };
    let r = &tail[at..];
    let pos = len - back + at as u64;
    if pos >= 20 {
        let l = read_at(f, pos - 20, 4)?;
        if u32_at(&l, 0) == ZIP64_LOCATOR_SIG {
            return Err(ContainerError::Zip64("a zip64 end record locator".into()));
        }
    }
    let (disk, cd_disk) = (u16_at(r, 4), u16_at(r, 6));
    let (here, total) = (u16_at(r, 8), u16_at(r, 10));
    let (size, offset) = (u32_at(r, 12) as u64, u32_at(r, 16) as u64);
    if here == 0xFFFF || total == 0xFFFF || size == 0xFFFF_FFFF || offset == 0xFFFF_FFFF {
        return Err(ContainerError::Zip64("the end record defers to one".into()));
    }
    if disk != 0 || cd_disk != 0 || here != total {
        return Err(ContainerError::NotZip("a split archive".into()));
    }
    if offset.saturating_add(size) != pos {
        return Err(ContainerError::Layout(format!(
            "the central directory ({size} bytes at {offset}) does not end where the end record starts ({pos}): {}",
            if offset.saturating_add(size) < pos {
                "bytes between them"
            } else {
                "they overlap"
            }
        )));
    }
    Ok((offset, size, total as usize))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Cursor, Write};

    fn zip(entries: &[(&str, &[u8], bool)]) -> Vec<u8> {
        let mut z = zip::ZipWriter::new(Cursor::new(Vec::new()));
        for (name, body, deflate) in entries {
            let o = zip::write::SimpleFileOptions::default().compression_method(if *deflate {
                zip::CompressionMethod::Deflated
            } else {
                zip::CompressionMethod::Stored
            });
            z.start_file(*name, o).unwrap();
            z.write_all(body).unwrap();
        }
        z.finish().unwrap().into_inner()
    }

    fn open(b: Vec<u8>) -> Result<Container<Cursor<Vec<u8>>>, ContainerError> {
        Container::open(Cursor::new(b), Limits::default())
    }

    #[test]
    fn a_genuine_container_is_read_with_digests_and_bytes() {
        let body = b"hello hello hello hello".repeat(100);
        let c = open(zip(&[("mimetype", b"x", false), ("a/b.txt", &body, true)])).unwrap();
        assert_eq!(c.entries().len(), 2);
        assert!(c.entries()[0].stored() && c.entries()[0].no_extra);
        assert_eq!(
            c.entry("a/b.txt").unwrap().sha256,
            openssl::sha::sha256(&body)
        );
        assert_eq!(c.load("a/b.txt", 1 << 20).unwrap().unwrap(), body);
        let e = c.load("a/b.txt", 10).unwrap().unwrap_err().to_string();
        assert!(e.contains("a file of its kind may have"), "{e}");
        assert!(c.load("nope", 10).is_none());
    }

    /// An entry an unzip would make a symbolic link (its Unix attributes
    /// say so, which the seal does not cover) is refused, naming it; a
    /// plain file with Unix permissions is read.
    #[test]
    fn an_entry_marked_as_a_symbolic_link_is_refused() {
        let o = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored)
            .unix_permissions(0o644);
        let build = |link: bool| {
            let mut z = zip::ZipWriter::new(Cursor::new(Vec::new()));
            z.start_file("mimetype", o).unwrap();
            z.write_all(b"x").unwrap();
            if link {
                z.add_symlink("documents/a.xml", "/etc/passwd", o).unwrap();
            }
            z.finish().unwrap().into_inner()
        };
        assert!(open(build(false)).is_ok());
        let link = build(true);
        let e = open(link).err().unwrap().to_string();
        assert!(
            e.contains("documents/a.xml") && e.contains("symbolic link"),
            "{e}"
        );
    }

    #[test]
    fn garbage_before_after_and_bad_names_are_refused() {
        let z = zip(&[("mimetype", b"x", false)]);
        let mut pre = vec![b'%'; 100];
        pre.extend_from_slice(&z);
        let e = open(pre).err().unwrap().to_string();
        // Offsets are not shifted: the central directory points at garbage.
        assert!(
            e.contains("not where") || e.contains("bytes before") || e.contains("does not end"),
            "{e}"
        );
        let mut post = z.clone();
        post.extend_from_slice(b"trailing");
        let e = open(post).err().unwrap().to_string();
        assert!(
            e.contains("after the end of central directory record"),
            "{e}"
        );
        let e = open(zip(&[("../x", b"x", false)]))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("\"../x\": has a path outside"), "{e}");
        let e = open(b"PK".to_vec()).err().unwrap().to_string();
        assert!(e.starts_with("not a zip container"), "{e}");
    }

    #[test]
    fn a_lying_size_is_refused_while_decompressing() {
        // A deflated entry whose records claim fewer bytes than it holds.
        let body = vec![0u8; 100_000];
        let mut z = zip(&[("big", &body, true)]);
        // Central record of the only entry: uncompressed size at +24.
        let cd = z
            .windows(4)
            .rposition(|w| w == CENTRAL_SIG.to_le_bytes())
            .unwrap();
        z[cd + 24..cd + 28].copy_from_slice(&1000u32.to_le_bytes());
        z[22..26].copy_from_slice(&1000u32.to_le_bytes());
        let e = open(z).err().unwrap().to_string();
        assert!(
            e.contains("\"big\": uncompresses to more than the 1000 bytes"),
            "{e}"
        );
    }

    /// One entry of [`raw`]: name, data, method (the data is taken as
    /// already compressed), flags, and whether a data descriptor follows.
    struct Raw<'a> {
        name: &'a str,
        data: &'a [u8],
        method: u16,
        flags: u16,
        descriptor: bool,
        extra: &'a [u8],
    }

    fn entry<'a>(name: &'a str, data: &'a [u8]) -> Raw<'a> {
        Raw {
            name,
            data,
            method: 0,
            flags: 0,
            descriptor: false,
            extra: b"",
        }
    }

    /// A zip written byte by byte, so that each field can be what a
    /// hostile writer makes it.
    fn raw(entries: &[Raw<'_>], tweak_descriptor_crc: bool) -> Vec<u8> {
        let (mut body, mut central) = (Vec::new(), Vec::new());
        for e in entries {
            let crc = crc32fast::hash(e.data);
            let n = e.data.len() as u32;
            let off = body.len() as u32;
            let put16 = |v: &mut Vec<u8>, x: u16| v.extend_from_slice(&x.to_le_bytes());
            let put32 = |v: &mut Vec<u8>, x: u32| v.extend_from_slice(&x.to_le_bytes());
            put32(&mut body, LOCAL_SIG);
            for x in [20, e.flags, e.method, 0, 0x21] {
                put16(&mut body, x);
            }
            for x in if e.descriptor { [0, 0, 0] } else { [crc, n, n] } {
                put32(&mut body, x);
            }
            put16(&mut body, e.name.len() as u16);
            put16(&mut body, e.extra.len() as u16);
            body.extend_from_slice(e.name.as_bytes());
            body.extend_from_slice(e.extra);
            body.extend_from_slice(e.data);
            if e.descriptor {
                put32(&mut body, DESCRIPTOR_SIG);
                put32(&mut body, if tweak_descriptor_crc { crc ^ 1 } else { crc });
                put32(&mut body, n);
                put32(&mut body, n);
            }
            put32(&mut central, CENTRAL_SIG);
            for x in [20, 20, e.flags, e.method, 0, 0x21] {
                put16(&mut central, x);
            }
            for x in [crc, n, n] {
                put32(&mut central, x);
            }
            put16(&mut central, e.name.len() as u16);
            for x in [e.extra.len() as u16, 0, 0, 0] {
                put16(&mut central, x);
            }
            put32(&mut central, 0);
            put32(&mut central, off);
            central.extend_from_slice(e.name.as_bytes());
            central.extend_from_slice(e.extra);
        }
        let mut out = body.clone();
        out.extend_from_slice(&central);
        out.extend_from_slice(&END_SIG.to_le_bytes());
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
        out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
        out.extend_from_slice(&(central.len() as u32).to_le_bytes());
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&[0; 2]);
        out
    }

    fn refusal(b: Vec<u8>) -> String {
        match open(b) {
            Ok(_) => panic!("read"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn each_hostile_field_is_refused_naming_the_entry() {
        // The builder itself makes what the reader reads.
        let c = open(raw(
            &[entry("mimetype", b"x"), entry("a.txt", b"hello")],
            false,
        ))
        .unwrap();
        assert_eq!(c.load("a.txt", 10).unwrap().unwrap(), b"hello");
        let with_descriptor = Raw {
            descriptor: true,
            flags: FLAG_DESCRIPTOR,
            ..entry("d.txt", b"described")
        };
        let c = open(raw(&[entry("mimetype", b"x"), with_descriptor], false)).unwrap();
        assert_eq!(c.load("d.txt", 100).unwrap().unwrap(), b"described");
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (
                raw(
                    &[Raw {
                        descriptor: true,
                        flags: FLAG_DESCRIPTOR,
                        ..entry("d.txt", b"described")
                    }],
                    true,
                ),
                "entry \"d.txt\": its data descriptor's CRC-32",
            ),
            (
                raw(&[entry("a", b"1"), entry("a", b"2")], false),
                "entry \"a\": is in the central directory twice",
            ),
            (
                raw(&[Raw { flags: FLAG_ENCRYPTED, ..entry("s", b"x") }], false),
                "entry \"s\": is encrypted",
            ),
            (
                raw(&[Raw { method: 12, ..entry("b", b"x") }], false),
                "entry \"b\": is compressed with method 12: only stored (0) and deflate (8) are read",
            ),
            (
                raw(&[Raw { extra: &[1, 0, 0, 0], ..entry("z", b"x") }], false),
                "zip64 is not read: a dossier is far smaller than 4 GiB",
            ),
            (
                raw(&[entry("d/", b"data")], false),
                "entry \"d/\": is a directory entry with data",
            ),
            (
                // unzip extracts this entry as "b.xml".
                raw(
                    &[Raw { extra: &[0x75, 0x70, 10, 0, 1, 0, 0, 0, 0, b'b', b'.', b'x', b'm', b'l'], ..entry("a.xml", b"x") }],
                    false,
                ),
                "entry \"a.xml\": its central record carries an Info-ZIP Unicode path field (0x7075) naming it \"b.xml\"",
            ),
            (
                raw(&[Raw { extra: &[0x75, 0x63, 5, 0, 1, 0, 0, 0, 0], ..entry("c", b"x") }], false),
                "entry \"c\": its central record carries an Info-ZIP Unicode comment field (0x6375)",
            ),
            (
                raw(&[Raw { extra: &[0x99, 0x99, 0, 0], ..entry("u", b"x") }], false),
                "entry \"u\": its central record carries an extra field 0x9999, which is not read",
            ),
            (
                raw(&[Raw { extra: &[0x55, 0x54, 9, 0], ..entry("t", b"x") }], false),
                "entry \"t\": its central record's extra field record 0x5455 runs past the field",
            ),
            (
                raw(&[entry("/etc/passwd", b"x")], false),
                "entry \"/etc/passwd\": has a path outside the container",
            ),
            (
                raw(&[entry("a/../../b", b"x")], false),
                "has a path outside the container",
            ),
        ];
        for (bytes, want) in cases {
            let e = refusal(bytes);
            assert!(e.contains(want), "{want:?} not in {e:?}");
        }
        // A gap between two entries.
        let mut b = raw(&[entry("a", b"1"), entry("b", b"2")], false);
        let second = b
            .windows(4)
            .rposition(|w| w == LOCAL_SIG.to_le_bytes())
            .unwrap();
        b.insert(second, 0);
        // Every offset after it moves: the central directory and the end.
        let cd = b
            .windows(4)
            .position(|w| w == CENTRAL_SIG.to_le_bytes())
            .unwrap();
        let at = b
            .windows(4)
            .rposition(|w| w == CENTRAL_SIG.to_le_bytes())
            .unwrap();
        let off = u32_at(&b, at + 42) + 1;
        b[at + 42..at + 46].copy_from_slice(&off.to_le_bytes());
        let end = b.len() - 22;
        b[end + 16..end + 20].copy_from_slice(&(cd as u32).to_le_bytes());
        let e = refusal(b);
        assert!(
            e.contains("1 bytes between the end of the previous entry and entry \"b\""),
            "{e}"
        );
        // Two central records on one local header: the second overlaps.
        let mut b = raw(&[entry("a", b"1"), entry("b", b"2")], false);
        let at = b
            .windows(4)
            .rposition(|w| w == CENTRAL_SIG.to_le_bytes())
            .unwrap();
        b[at + 42..at + 46].copy_from_slice(&0u32.to_le_bytes());
        let e = refusal(b);
        assert!(e.contains("overlaps the entry before it"), "{e}");
        // An extended timestamp, as Info-ZIP writes it, is read; in the
        // local header alone it is refused.
        let ts: &[u8] = &[0x55, 0x54, 5, 0, 1, 0, 0, 0, 0];
        let c = open(raw(
            &[Raw {
                extra: ts,
                ..entry("t", b"x")
            }],
            false,
        ))
        .unwrap();
        assert!(!c.entries()[0].no_extra);
        let mut b = raw(
            &[Raw {
                extra: ts,
                ..entry("t", b"x")
            }],
            false,
        );
        let cd = b
            .windows(4)
            .position(|w| w == CENTRAL_SIG.to_le_bytes())
            .unwrap();
        // The central record's extra length to 0, its bytes taken out.
        b[cd + 30..cd + 32].copy_from_slice(&0u16.to_le_bytes());
        let name_end = cd + 46 + 1;
        b.drain(name_end..name_end + ts.len());
        let end = b.len() - 22;
        let size = u32_at(&b, end + 12) - ts.len() as u32;
        b[end + 12..end + 16].copy_from_slice(&size.to_le_bytes());
        let e = refusal(b);
        assert!(
            e.contains("entry \"t\": its local header's extra fields (0x5455) are not its central record's (none)"),
            "{e}"
        );
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_are_read_or_refused_never_a_panic(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..3000),
            flips in proptest::collection::vec((proptest::num::usize::ANY, proptest::num::u8::ANY), 1..6),
        ) {
            let _ = open(bytes);
            let body = b"some text, some text".repeat(20);
            let good = zip(&[("mimetype", b"application/x", false), ("a.txt", &body, true), ("b.txt", b"b", false)]);
            let mut c = good.clone();
            let n = c.len();
            for (at, x) in flips {
                c[at % n] ^= x | 1;
            }
            // Read or refused; if read, nothing it says differs unseen:
            // the entries it reads are the genuine ones byte for byte, or
            // their digests differ.
            let genuine: std::collections::BTreeMap<&str, &[u8]> = [
                ("mimetype", &b"application/x"[..]),
                ("a.txt", &body[..]),
                ("b.txt", &b"b"[..]),
            ]
            .into_iter()
            .collect();
            if let Ok(c) = open(c) {
                for e in c.entries() {
                    // What it reads is what its digest says it is.
                    if let Some(Ok(bytes)) = c.load(&e.name, 1 << 20) {
                        proptest::prop_assert_eq!(openssl::sha::sha256(&bytes), e.sha256);
                    }
                    let same_digest = genuine
                        .get(e.name.as_str())
                        .is_some_and(|g| openssl::sha::sha256(g) == e.sha256);
                    if same_digest {
                        let loaded = c.load(&e.name, 1 << 20).and_then(Result::ok);
                        proptest::prop_assert_eq!(
                            loaded.as_deref(),
                            genuine.get(e.name.as_str()).copied()
                        );
                    }
                }
            }
        }
    }
}
