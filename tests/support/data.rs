//! Deterministic test data and filesystem trees.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Keys (relative, `/`-separated) and their bytes.
pub type Tree = BTreeMap<String, Vec<u8>>;

/// `len` pseudo-random bytes determined by `seed` (SplitMix64; stable across versions).
pub fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        out.extend_from_slice(&z.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A seed derived from a string (FNV-1a), so each key gets its own content.
pub fn seed_of(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// `n` small objects `prefix000..` with sizes between 1 and `max_size` bytes and distinct content.
pub fn small_objects(prefix: &str, n: usize, max_size: usize) -> Tree {
    (0..n)
        .map(|i| {
            let key = format!("{prefix}{i:04}");
            let size = 1 + (seed_of(&key) as usize % max_size.max(1));
            let body = bytes(seed_of(&key), size);
            (key, body)
        })
        .collect()
}

/// Write files below `root` (creating directories). Keys ending in `/` become directories.
pub fn write_tree(root: &Path, tree: &Tree) {
    for (key, body) in tree {
        let path = root.join(key);
        if key.ends_with('/') {
            std::fs::create_dir_all(&path)
                .unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
            continue;
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .unwrap_or_else(|e| panic!("mkdir {}: {e}", parent.display()));
        }
        std::fs::write(&path, body).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }
}

/// Every regular file below `root` as `relative/key -> bytes`, skipping Ferry's `.ferry/`
/// directory at the root. Empty directories appear as `dir/` with no bytes. Temporary files
/// Ferry left behind (`.ferry-tmp.*`) are included, so comparisons notice them.
pub fn read_tree(root: &Path) -> Tree {
    let mut out = Tree::new();
    walk(root, root, &mut out);
    out
}

fn walk(root: &Path, dir: &Path, out: &mut Tree) {
    let mut entries: Vec<_> = match std::fs::read_dir(dir) {
        Ok(rd) => rd.map(|e| e.expect("dir entry")).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
        Err(e) => panic!("read dir {}: {e}", dir.display()),
    };
    entries.sort_by_key(|e| e.file_name());
    if entries.is_empty() && dir != root {
        out.insert(format!("{}/", rel(root, dir)), Vec::new());
    }
    for entry in entries {
        let path = entry.path();
        let ft = entry.file_type().expect("file type");
        if dir == root && entry.file_name() == ".ferry" {
            continue;
        }
        if ft.is_dir() {
            walk(root, &path, out);
        } else {
            let body =
                std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
            out.insert(rel(root, &path), body);
        }
    }
}

fn rel(root: &Path, p: &Path) -> String {
    p.strip_prefix(root)
        .unwrap()
        .to_string_lossy()
        .replace('\\', "/")
}

/// Every path (files and directories) below `root`, Ferry's `.ferry/` included; for checks
/// that nothing was written somewhere.
pub fn all_paths(root: &Path) -> Vec<PathBuf> {
    fn go(dir: &Path, out: &mut Vec<PathBuf>) {
        if let Ok(rd) = std::fs::read_dir(dir) {
            for e in rd.flatten() {
                out.push(e.path());
                if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    go(&e.path(), out);
                }
            }
        }
    }
    let mut out = Vec::new();
    go(root, &mut out);
    out.sort();
    out
}

/// Set a file's modification time to `secs` after the Unix epoch.
pub fn set_mtime(path: &Path, secs: i64) {
    // std's File::set_modified (the workspace has no filetime dependency any more).
    let t = if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs as u64)
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    };
    let file = std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {} to set its mtime: {e}", path.display()));
    file.set_modified(t)
        .unwrap_or_else(|e| panic!("set mtime of {}: {e}", path.display()));
}

/// A file's modification time in whole seconds since the Unix epoch.
pub fn mtime(path: &Path) -> i64 {
    let m = std::fs::metadata(path).unwrap_or_else(|e| panic!("stat {}: {e}", path.display()));
    let t = m.modified().expect("mtime");
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    }
}

/// Seconds since the epoch now.
pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs() as i64
}

/// RFC 3339 (UTC) for `secs` since the epoch.
pub fn rfc3339(secs: i64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp(secs, 0)
        .expect("valid time")
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Describe how two trees differ (missing, extra, different keys), for assertion messages;
/// empty when they are equal.
pub fn diff_trees(expected: &Tree, actual: &Tree) -> String {
    let mut s = String::new();
    for (k, v) in expected {
        match actual.get(k) {
            None => s.push_str(&format!("  missing: {k:?} ({} bytes)\n", v.len())),
            Some(a) if a != v => s.push_str(&format!(
                "  different: {k:?} expected {} bytes (md5 {}), got {} bytes (md5 {}){}\n",
                v.len(),
                md5_hex(v),
                a.len(),
                md5_hex(a),
                if contains(a, b";chunk-signature=") {
                    " [aws-chunked framing stored!]"
                } else {
                    ""
                }
            )),
            _ => {}
        }
    }
    for (k, a) in actual {
        if !expected.contains_key(k) {
            s.push_str(&format!("  unexpected: {k:?} ({} bytes)\n", a.len()));
        }
    }
    s
}

/// Panic with a readable diff when the trees differ.
#[track_caller]
pub fn assert_trees_eq(expected: &Tree, actual: &Tree, what: &str) {
    let d = diff_trees(expected, actual);
    assert!(
        d.is_empty(),
        "{what}: contents differ from what was expected:\n{d}"
    );
}

pub fn md5_hex(data: &[u8]) -> String {
    use md5::Digest;
    hex::encode(md5::Md5::digest(data))
}

pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}
