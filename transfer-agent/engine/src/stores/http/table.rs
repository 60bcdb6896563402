//! The list sorted by key, on disk: an external sort in bounded memory (sorted runs of at most
//! [`RUN_BYTES`], merged into one file) with a sparse index in memory, so that a listing in
//! key order and a lookup by key cost a few reads whatever the length of the list (4 million
//! lines sort in about 40 MiB of memory). Rows of one key are adjacent, first line first: a
//! later one is marked as a duplicate of the first. Blocking file I/O: call from
//! `spawn_blocking`.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The most bytes of rows (estimated) held in memory while sorting.
pub const RUN_BYTES: usize = 32 << 20;
/// One index entry per this many rows.
const STRIDE: u64 = 64;

/// One row of the list.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Row {
    /// The key (for a row that cannot be copied: a stand-in, see `invalid`).
    pub key: String,
    /// Line in the list (1-based); rows of one key sort by it.
    pub line: u64,
    pub url: String,
    pub size: Option<u64>,
    pub md5: Option<[u8; 16]>,
    /// Why the row cannot be copied.
    pub invalid: Option<String>,
    /// The line of the first row of the same key, when this is a later one.
    pub duplicate_of: Option<u64>,
}

impl Row {
    fn estimated_bytes(&self) -> usize {
        self.key.len() + self.url.len() + 96
    }

    fn write(&self, w: &mut impl Write) -> std::io::Result<()> {
        write_str(w, &self.key)?;
        w.write_all(&self.line.to_le_bytes())?;
        write_str(w, &self.url)?;
        w.write_all(&self.size.map_or(u64::MAX, |s| s).to_le_bytes())?;
        match &self.md5 {
            Some(m) => {
                w.write_all(&[1])?;
                w.write_all(m)?;
            }
            None => w.write_all(&[0])?,
        }
        write_str(w, self.invalid.as_deref().unwrap_or(""))?;
        w.write_all(&self.duplicate_of.unwrap_or(0).to_le_bytes())
    }

    /// The next row, None at the end of the file.
    fn read(r: &mut impl Read) -> std::io::Result<Option<Row>> {
        let mut len = [0u8; 4];
        match r.read_exact(&mut len) {
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            other => other?,
        }
        let key = read_bytes(r, u32::from_le_bytes(len))?;
        let line = read_u64(r)?;
        let url = read_str(r)?;
        let size = Some(read_u64(r)?).filter(|&s| s != u64::MAX);
        let mut flag = [0u8; 1];
        r.read_exact(&mut flag)?;
        let md5 = if flag[0] == 1 {
            let mut m = [0u8; 16];
            r.read_exact(&mut m)?;
            Some(m)
        } else {
            None
        };
        let invalid = Some(read_str(r)?).filter(|s| !s.is_empty());
        let duplicate_of = Some(read_u64(r)?).filter(|&l| l != 0);
        Ok(Some(Row {
            key,
            line,
            url,
            size,
            md5,
            invalid,
            duplicate_of,
        }))
    }
}

fn write_str(w: &mut impl Write, s: &str) -> std::io::Result<()> {
    w.write_all(&(s.len() as u32).to_le_bytes())?;
    w.write_all(s.as_bytes())
}

fn read_u64(r: &mut impl Read) -> std::io::Result<u64> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b)?;
    Ok(u64::from_le_bytes(b))
}

fn read_str(r: &mut impl Read) -> std::io::Result<String> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)?;
    read_bytes(r, u32::from_le_bytes(len))
}

fn read_bytes(r: &mut impl Read, len: u32) -> std::io::Result<String> {
    let mut b = vec![0u8; len as usize];
    r.read_exact(&mut b)?;
    String::from_utf8(b).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// Collects rows into sorted runs on disk.
pub struct Sorter {
    dir: tempfile::TempDir,
    rows: Vec<Row>,
    bytes: usize,
    runs: Vec<PathBuf>,
    limit: usize,
}

impl Sorter {
    /// A sorter whose files go into a new folder below `parent`.
    pub fn new(parent: &Path, limit: usize) -> std::io::Result<Self> {
        Ok(Sorter {
            dir: tempfile::Builder::new()
                .prefix("ferry-url-list-")
                .tempdir_in(parent)?,
            rows: Vec::new(),
            bytes: 0,
            runs: Vec::new(),
            limit,
        })
    }

    /// Whether the rows held have reached the limit ([`Sorter::spill`] them).
    pub fn push(&mut self, row: Row) -> bool {
        self.bytes += row.estimated_bytes();
        self.rows.push(row);
        self.bytes >= self.limit
    }

    /// Writes the rows held as one sorted run.
    pub fn spill(&mut self) -> std::io::Result<()> {
        if self.rows.is_empty() {
            return Ok(());
        }
        self.rows
            .sort_unstable_by(|a, b| (&a.key, a.line).cmp(&(&b.key, b.line)));
        let path = self.dir.path().join(format!("run-{}", self.runs.len()));
        let mut w = BufWriter::new(File::create(&path)?);
        for r in self.rows.drain(..) {
            r.write(&mut w)?;
        }
        w.flush()?;
        self.runs.push(path);
        self.bytes = 0;
        Ok(())
    }

    /// Merges the runs into the table, marking later rows of a key as duplicates.
    pub fn finish(mut self) -> std::io::Result<Table> {
        self.spill()?;
        let path = self.dir.path().join("table");
        let mut out = BufWriter::new(File::create(&path)?);
        let mut readers = Vec::new();
        let mut heap = BinaryHeap::new();
        for (i, run) in self.runs.iter().enumerate() {
            let mut r = BufReader::with_capacity(64 << 10, File::open(run)?);
            if let Some(row) = Row::read(&mut r)? {
                heap.push(Reverse((row.key.clone(), row.line, i, row)));
            }
            readers.push(r);
        }
        let (mut index, mut offset, mut rows) = (Vec::new(), 0u64, 0u64);
        let mut first: Option<(String, u64)> = None;
        while let Some(Reverse((_, _, i, mut row))) = heap.pop() {
            if let Some(next) = Row::read(&mut readers[i])? {
                heap.push(Reverse((next.key.clone(), next.line, i, next)));
            }
            match &first {
                Some((k, line)) if *k == row.key => row.duplicate_of = Some(*line),
                _ => first = Some((row.key.clone(), row.line)),
            }
            if rows % STRIDE == 0 {
                index.push((row.key.clone(), offset));
            }
            let mut buf = Vec::with_capacity(row.estimated_bytes());
            row.write(&mut buf)?;
            out.write_all(&buf)?;
            offset += buf.len() as u64;
            rows += 1;
        }
        out.flush()?;
        drop(readers);
        for run in &self.runs {
            let _ = std::fs::remove_file(run);
        }
        Ok(Table {
            _dir: self.dir,
            path,
            index,
            rows,
        })
    }
}

/// The sorted rows of a list.
pub struct Table {
    _dir: tempfile::TempDir,
    path: PathBuf,
    /// The key and file offset of every [`STRIDE`]th row.
    index: Vec<(String, u64)>,
    pub rows: u64,
}

impl Table {
    /// Reads the rows with `after < key <= until` in key order, handing each to `each`
    /// until it returns false.
    pub fn scan(
        &self,
        after: Option<&str>,
        until: Option<&str>,
        mut each: impl FnMut(Row) -> bool,
    ) -> std::io::Result<()> {
        let start = match after {
            Some(a) => {
                let i = self.index.partition_point(|(k, _)| k.as_str() <= a);
                i.checked_sub(1).map_or(0, |i| self.index[i].1)
            }
            None => 0,
        };
        let mut file = File::open(&self.path)?;
        file.seek(SeekFrom::Start(start))?;
        let mut r = BufReader::with_capacity(256 << 10, file);
        while let Some(row) = Row::read(&mut r)? {
            if after.is_some_and(|a| row.key.as_str() <= a) {
                continue;
            }
            if until.is_some_and(|u| row.key.as_str() > u) || !each(row) {
                break;
            }
        }
        Ok(())
    }

    /// The first row of `key` (the one copied), if the list has it.
    pub fn get(&self, key: &str) -> std::io::Result<Option<Row>> {
        let i = self.index.partition_point(|(k, _)| k.as_str() < key);
        let start = i.checked_sub(1).map_or(0, |i| self.index[i].1);
        let mut file = File::open(&self.path)?;
        file.seek(SeekFrom::Start(start))?;
        let mut r = BufReader::with_capacity(16 << 10, file);
        while let Some(row) = Row::read(&mut r)? {
            match row.key.as_str().cmp(key) {
                std::cmp::Ordering::Less => continue,
                std::cmp::Ordering::Equal => return Ok(Some(row)),
                std::cmp::Ordering::Greater => break,
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(key: &str, line: u64) -> Row {
        Row {
            key: key.into(),
            line,
            url: format!("https://h/{key}?line={line}"),
            size: line.is_multiple_of(2).then_some(line),
            md5: line.is_multiple_of(3).then_some([line as u8; 16]),
            invalid: None,
            duplicate_of: None,
        }
    }

    /// Many runs (a tiny memory limit) merge into one sorted table; duplicates are marked
    /// against the first line; scans and lookups find every key.
    #[test]
    fn an_external_sort_in_small_runs_gives_the_sorted_list() {
        let tmp = tempfile::tempdir().unwrap();
        let mut s = Sorter::new(tmp.path(), 4096).unwrap();
        let n = 5000u64;
        // Keys in a scrambled order, and key 77 twice more (lines 6001 and 6002).
        for i in 0..n {
            let k = (i * 7919) % n;
            if s.push(row(&format!("k{k:05}"), i + 1)) {
                s.spill().unwrap();
            }
        }
        s.push(row("k00077", 6002));
        s.push(row("k00077", 6001));
        assert!(s.runs.len() > 10, "{} runs", s.runs.len());
        let t = s.finish().unwrap();
        assert_eq!(t.rows, n + 2);
        let mut all = Vec::new();
        t.scan(None, None, |r| {
            all.push(r);
            true
        })
        .unwrap();
        assert!(all
            .windows(2)
            .all(|w| (&w[0].key, w[0].line) < (&w[1].key, w[1].line)));
        let dups: Vec<_> = all.iter().filter(|r| r.duplicate_of.is_some()).collect();
        assert_eq!(dups.len(), 2);
        let first = all.iter().find(|r| r.key == "k00077").unwrap();
        assert!(dups.iter().all(|d| d.duplicate_of == Some(first.line)));
        assert_eq!(t.get("k00077").unwrap().unwrap().line, first.line);
        assert_eq!(t.get("k04999").unwrap().unwrap().key, "k04999");
        assert!(t.get("k05000").unwrap().is_none());
        assert!(t.get("a").unwrap().is_none());
        let mut range = Vec::new();
        t.scan(Some("k00100"), Some("k00200"), |r| {
            range.push(r.key);
            true
        })
        .unwrap();
        assert_eq!(range.len(), 100);
        assert_eq!(
            (range[0].as_str(), range[99].as_str()),
            ("k00101", "k00200")
        );
    }
}
