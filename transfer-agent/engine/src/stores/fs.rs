//! Directory trees: walked in byte order of the whole key (like an S3 listing), written
//! atomically (a temporary file renamed into place), never outside the root.

use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use std::any::Any;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use ferry_core::FailureClass;
use tokio::sync::mpsc;

use super::{Body, Listing, ObjectInfo, ObjectMeta, Sink, SinkCaps, Source, SourceCaps, Upload};
use crate::error::TransferError;
use crate::limit::{Buffer, Limits};

/// Temporary files Ferry writes start with this; listings skip them and sweep stale ones.
pub const TEMP_PREFIX: &str = ".ferry-tmp.";
const MAX_NAME: usize = 255;

#[derive(Clone, Debug)]
pub struct FsStore {
    root: PathBuf,
    limits: Arc<Limits>,
}

impl FsStore {
    pub fn new(root: impl Into<PathBuf>, limits: Arc<Limits>) -> FsStore {
        FsStore {
            root: root.into(),
            limits,
        }
    }

    /// The path of `key` below the root, refusing keys that are not plain relative paths.
    pub fn path_of(&self, key: &str) -> Result<PathBuf, TransferError> {
        let mut p = self.root.clone();
        let trimmed = key.strip_suffix('/').unwrap_or(key);
        if trimmed.is_empty() {
            return Err(unrepresentable("an empty name"));
        }
        for seg in trimmed.split('/') {
            match seg {
                "" => return Err(unrepresentable("an empty path segment")),
                "." | ".." => return Err(unrepresentable("a '.' or '..' segment")),
                s if s.len() > MAX_NAME => {
                    return Err(unrepresentable("a name longer than 255 bytes"))
                }
                s if s.contains('\0') => return Err(unrepresentable("a NUL byte")),
                s if s.starts_with(TEMP_PREFIX) => {
                    return Err(unrepresentable(
                        "a name reserved for Ferry's temporary files",
                    ))
                }
                s => p.push(s),
            }
        }
        Ok(p)
    }

    /// Creates the parent directories of `path` and checks that they resolve inside the root
    /// (a symbolic link planted in the destination cannot lead writes outside it).
    fn prepare_parent(&self, path: &Path) -> Result<PathBuf, TransferError> {
        let parent = path.parent().expect("a key path has a parent");
        fs::create_dir_all(parent).map_err(|e| clash(&e))?;
        let root = fs::canonicalize(&self.root)
            .map_err(|e| TransferError::io("resolving the destination root", &e))?;
        let real = fs::canonicalize(parent).map_err(|e| clash(&e))?;
        if !real.starts_with(&root) {
            return Err(unrepresentable("a path that leads outside the destination"));
        }
        Ok(real)
    }

    fn temp_path(dir: &Path) -> PathBuf {
        dir.join(format!("{TEMP_PREFIX}{:016x}", rand::random::<u64>()))
    }

    /// Checks the root is a directory; a destination's is created when missing (the first
    /// write would create it anyway), except in a dry run, which writes nothing.
    async fn check(&self, create: bool, missing_ok: bool) -> Result<(), TransferError> {
        let root = self.root.clone();
        blocking(move || {
            if missing_ok && !root.exists() {
                return Ok(());
            }
            if create && !root.exists() {
                fs::create_dir_all(&root).map_err(|e| {
                    TransferError::io(&format!("creating {}", root.display()), &e).fatal()
                })?;
            }
            match fs::metadata(&root) {
                Ok(m) if m.is_dir() => Ok(()),
                Ok(_) => Err(TransferError::new(
                    FailureClass::InvalidRequest,
                    format!("{} is not a directory", root.display()),
                )
                .fatal()),
                Err(e) => Err(TransferError::io(&format!("{}", root.display()), &e).fatal()),
            }
        })
        .await
    }
}

#[async_trait::async_trait]
impl Source for FsStore {
    fn describe(&self) -> String {
        self.root.display().to_string()
    }

    fn full_key(&self, key: &str) -> String {
        key.to_string()
    }

    fn caps(&self) -> SourceCaps {
        SourceCaps {
            md5_etags: false,
            ranged_reads: true,
        }
    }

    fn list(&self, after: Option<String>, until: Option<String>) -> Listing {
        let (tx, rx) = mpsc::channel(1024);
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || {
            let walk = Walk {
                tx: &tx,
                after: after.as_deref(),
                until: until.as_deref(),
            };
            if let Err(e) = walk.dir(&root, "") {
                let _ = tx.blocking_send(Err(TransferError::io(
                    &format!("listing {}", root.display()),
                    &e,
                )
                .fatal()));
            }
        });
        super::channel_stream(rx)
    }

    async fn head(&self, key: &str) -> Result<Option<(ObjectInfo, ObjectMeta)>, TransferError> {
        let path = match self.path_of(key) {
            Ok(p) => p,
            Err(_) => return Ok(None),
        };
        let key = key.to_string();
        blocking(move || match fs::metadata(&path) {
            Ok(m) if m.is_file() => {
                let info = info_from(&key, &m);
                let meta = meta_for(&key, info.modified);
                Ok(Some((info, meta)))
            }
            Ok(_) => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(TransferError::io("stat", &e)),
        })
        .await
    }

    async fn get(
        &self,
        key: &str,
        offset: u64,
        len: u64,
        _whole: bool,
        _etag: Option<&str>,
        mut buffer: Buffer,
    ) -> Result<Body, TransferError> {
        let path = self.path_of(key)?;
        self.limits.bandwidth(len).await;
        let key = key.to_string();
        blocking(move || {
            let f = File::open(&path).map_err(|e| TransferError::io("open", &e))?;
            let m = f.metadata().map_err(|e| TransferError::io("stat", &e))?;
            let buf = buffer.zeroed(len as usize);
            let mut done = 0usize;
            while done < buf.len() {
                let n = f
                    .read_at(&mut buf[done..], offset + done as u64)
                    .map_err(|e| TransferError::io("read", &e))?;
                if n == 0 {
                    return Err(TransferError::short_body(len, done as u64));
                }
                done += n;
            }
            let modified = m.modified().ok().map(DateTime::<Utc>::from);
            Ok(Body {
                bytes: buffer.freeze(),
                meta: meta_for(&key, modified),
            })
        })
        .await
    }

    async fn probe(&self) -> Result<(), TransferError> {
        self.check(false, false).await
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

#[async_trait::async_trait]
impl Sink for FsStore {
    fn sink_caps(&self) -> SinkCaps {
        SinkCaps {
            max_object_size: None,
            etags_are_md5: false,
        }
    }

    async fn put(
        &self,
        key: &str,
        body: Bytes,
        meta: &ObjectMeta,
        _md5: Option<&[u8]>,
    ) -> Result<Option<String>, TransferError> {
        let path = self.path_of(key)?;
        let me = self.clone();
        let key = key.to_string();
        let modified = meta.modified;
        blocking(move || {
            if key.ends_with('/') {
                // A zero-byte "directory marker" object becomes a directory.
                if !body.is_empty() {
                    return Err(unrepresentable("a name ending in '/' with content"));
                }
                me.prepare_parent(&path.join("x"))?;
                return Ok(());
            }
            let dir = me.prepare_parent(&path)?;
            let tmp = Self::temp_path(&dir);
            let res = (|| {
                let mut f = File::create(&tmp).map_err(|e| TransferError::io("create", &e))?;
                f.write_all(&body)
                    .map_err(|e| TransferError::io("write", &e))?;
                finish_file(f, &tmp, &path, body.len() as u64, modified)
            })();
            if res.is_err() {
                let _ = fs::remove_file(&tmp);
            }
            res
        })
        .await
        .map(|_| None)
    }

    async fn create_upload(
        &self,
        key: &str,
        _meta: &ObjectMeta,
        size: u64,
    ) -> Result<Upload, TransferError> {
        let path = self.path_of(key)?;
        let me = self.clone();
        let key = key.to_string();
        blocking(move || {
            let dir = me.prepare_parent(&path)?;
            let tmp = Self::temp_path(&dir);
            let f = File::create(&tmp).map_err(|e| TransferError::io("create", &e))?;
            f.set_len(size)
                .map_err(|e| TransferError::io("allocate", &e))?;
            Ok(Upload {
                key,
                id: tmp.to_string_lossy().into_owned(),
            })
        })
        .await
    }

    async fn upload_part(
        &self,
        up: &Upload,
        _number: i32,
        offset: u64,
        body: Bytes,
        _md5: Option<&[u8]>,
    ) -> Result<String, TransferError> {
        let tmp = PathBuf::from(&up.id);
        blocking(move || {
            let f = fs::OpenOptions::new()
                .write(true)
                .open(&tmp)
                .map_err(|e| TransferError::io("open", &e))?;
            f.write_all_at(&body, offset)
                .map_err(|e| TransferError::io("write", &e))
        })
        .await
        .map(|_| String::new())
    }

    async fn complete_upload(
        &self,
        up: &Upload,
        _etags: Vec<String>,
        size: u64,
        meta: &ObjectMeta,
    ) -> Result<Option<String>, TransferError> {
        let tmp = PathBuf::from(&up.id);
        let path = self.path_of(&up.key)?;
        let modified = meta.modified;
        let res = blocking({
            let tmp = tmp.clone();
            move || {
                let f = File::open(&tmp).map_err(|e| TransferError::io("open", &e))?;
                finish_file(f, &tmp, &path, size, modified)
            }
        })
        .await;
        if res.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        res.map(|_| None)
    }

    async fn abort_upload(&self, up: &Upload) {
        let tmp = PathBuf::from(&up.id);
        // Only ever remove Ferry's own temporary files.
        if tmp
            .file_name()
            .and_then(OsStr::to_str)
            .is_some_and(|n| n.starts_with(TEMP_PREFIX))
        {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
    }

    async fn delete(&self, key: &str) -> Result<(), TransferError> {
        let path = self.path_of(key)?;
        blocking(move || match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(TransferError::io("delete", &e)),
        })
        .await
    }

    async fn probe_destination(&self, dry_run: bool) -> Result<(), TransferError> {
        self.check(!dry_run, dry_run).await
    }

    fn folder(&self, folder: &str) -> Arc<dyn Sink> {
        Arc::new(FsStore {
            root: self.root.join(folder),
            limits: self.limits.clone(),
        })
    }
}

/// Checks the size, sets the modification time and renames the temporary file into place.
fn finish_file(
    f: File,
    tmp: &Path,
    path: &Path,
    size: u64,
    modified: Option<DateTime<Utc>>,
) -> Result<(), TransferError> {
    let len = f
        .metadata()
        .map_err(|e| TransferError::io("stat", &e))?
        .len();
    if len != size {
        return Err(TransferError::short_body(size, len));
    }
    if let Some(t) = modified {
        f.set_modified(SystemTime::from(t))
            .map_err(|e| TransferError::io("set mtime", &e))?;
    }
    drop(f);
    fs::rename(tmp, path).map_err(|e| clash(&e))
}

fn unrepresentable(why: &str) -> TransferError {
    TransferError::new(
        FailureClass::Unrepresentable,
        format!("the key cannot be a file: it has {why}"),
    )
    .retryable(false)
}

/// A file where a directory must go or the reverse.
fn clash(e: &std::io::Error) -> TransferError {
    use std::io::ErrorKind::*;
    match e.kind() {
        NotADirectory | IsADirectory | AlreadyExists | DirectoryNotEmpty => {
            unrepresentable("a file/directory clash with another key")
        }
        _ if e.raw_os_error() == Some(21)
            || e.raw_os_error() == Some(20)
            || e.raw_os_error() == Some(39) =>
        {
            unrepresentable("a file/directory clash with another key")
        }
        _ => TransferError::io("write", e),
    }
}

fn info_from(key: &str, m: &fs::Metadata) -> ObjectInfo {
    ObjectInfo {
        key: key.to_string(),
        size: m.len(),
        modified: m.modified().ok().map(DateTime::<Utc>::from),
        etag: None,
        archived: false,
        invalid: None,
    }
}

fn meta_for(key: &str, modified: Option<DateTime<Utc>>) -> ObjectMeta {
    let content_type = mime_guess::from_path(key).first_raw().map(str::to_string);
    ObjectMeta {
        content_type,
        modified,
        ..Default::default()
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, TransferError> + Send + 'static,
) -> Result<T, TransferError> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(TransferError::new(
            FailureClass::Internal,
            format!("a file task failed: {e}"),
        ))
    })
}

/// A depth-first walk that yields keys in byte order of the whole key: entries of a
/// directory are sorted by name, with `/` appended to directory names (so `a-b` comes before
/// `a/x`, as in an S3 listing).
struct Walk<'a> {
    tx: &'a mpsc::Sender<Result<ObjectInfo, TransferError>>,
    after: Option<&'a str>,
    until: Option<&'a str>,
}

enum Flow {
    Go,
    Stop,
}

impl Walk<'_> {
    fn dir(&self, path: &Path, prefix: &str) -> std::io::Result<Flow> {
        let mut entries: Vec<(Vec<u8>, PathBuf, bool, bool)> = Vec::new();
        for entry in fs::read_dir(path)? {
            let entry = entry?;
            let name = entry.file_name();
            let bytes = name.as_bytes();
            if prefix.is_empty() && bytes == b".ferry" {
                continue;
            }
            if bytes.starts_with(TEMP_PREFIX.as_bytes()) {
                // Left by a run that was killed: never a user's file, never complete.
                let _ = fs::remove_file(entry.path());
                continue;
            }
            let ft = entry.file_type()?;
            let (is_dir, is_file) = if ft.is_symlink() {
                match fs::metadata(entry.path()) {
                    // Symbolic links to files are followed; to directories they are not
                    // (they could loop or lead anywhere).
                    Ok(m) => (false, m.is_file()),
                    Err(_) => (false, false),
                }
            } else {
                (ft.is_dir(), ft.is_file())
            };
            if !is_dir && !is_file {
                continue;
            }
            let mut sort = bytes.to_vec();
            if is_dir {
                sort.push(b'/');
            }
            entries.push((
                sort,
                entry.path(),
                is_dir,
                std::str::from_utf8(bytes).is_ok(),
            ));
        }
        entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        for (sort, p, is_dir, utf8) in entries {
            let key = format!("{prefix}{}", String::from_utf8_lossy(&sort));
            if self
                .until
                .is_some_and(|u| key.as_str() > u && !(is_dir && u.starts_with(&key)))
            {
                return Ok(Flow::Stop);
            }
            if is_dir {
                // Skip a whole subtree that lies before the resume point.
                if self
                    .after
                    .is_some_and(|a| a > key.as_str() && !a.starts_with(&key))
                {
                    continue;
                }
                if let Flow::Stop = self.dir(&p, &key)? {
                    return Ok(Flow::Stop);
                }
                continue;
            }
            if self.after.is_some_and(|a| key.as_str() <= a) {
                continue;
            }
            let item = match fs::metadata(&p) {
                Ok(m) => {
                    let mut info = info_from(&key, &m);
                    if !utf8 {
                        info.invalid = Some("the file name is not valid UTF-8".into());
                    }
                    Ok(info)
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => Err(TransferError::io(&format!("stat {key}"), &e)),
            };
            if self.tx.blocking_send(item).is_err() {
                return Ok(Flow::Stop);
            }
        }
        Ok(Flow::Go)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    fn store(dir: &Path) -> FsStore {
        FsStore::new(dir, Arc::new(Limits::unlimited()))
    }

    async fn keys(s: &FsStore, after: Option<&str>, until: Option<&str>) -> Vec<String> {
        s.list(after.map(String::from), until.map(String::from))
            .map(|r| r.unwrap().key)
            .collect()
            .await
    }

    fn touch(root: &Path, rel: &str) {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, rel.as_bytes()).unwrap();
    }

    #[tokio::test]
    async fn walk_is_in_byte_order_of_the_whole_key() {
        let d = tempfile::tempdir().unwrap();
        for k in ["a/x", "a-b", "a.txt", "a0", "b", "a/y/z", "Z"] {
            touch(d.path(), k);
        }
        let got = keys(&store(d.path()), None, None).await;
        let mut want: Vec<String> = ["a/x", "a-b", "a.txt", "a0", "b", "a/y/z", "Z"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        want.sort();
        assert_eq!(got, want);
    }

    #[tokio::test]
    async fn walk_resumes_after_and_stops_at_until() {
        let d = tempfile::tempdir().unwrap();
        for k in ["a/1", "a/2", "b/1", "b/2", "c"] {
            touch(d.path(), k);
        }
        let s = store(d.path());
        assert_eq!(keys(&s, Some("a/2"), None).await, vec!["b/1", "b/2", "c"]);
        assert_eq!(
            keys(&s, Some("a"), Some("b/1")).await,
            vec!["a/1", "a/2", "b/1"]
        );
        assert_eq!(keys(&s, Some("b/1"), Some("b/9")).await, vec!["b/2"]);
    }

    #[tokio::test]
    async fn listing_skips_ferry_dir_and_sweeps_temp_files() {
        let d = tempfile::tempdir().unwrap();
        touch(d.path(), ".ferry/reports/x");
        touch(d.path(), "k/.ferry-tmp.0123");
        touch(d.path(), "k/v");
        assert_eq!(keys(&store(d.path()), None, None).await, vec!["k/v"]);
        assert!(!d.path().join("k/.ferry-tmp.0123").exists());
    }

    #[test]
    fn keys_that_cannot_be_files_are_refused() {
        let s = store(Path::new("/dest"));
        for bad in [
            "a/../b",
            "../x",
            "./x",
            "a//b",
            "/abs",
            "",
            &"n".repeat(256),
        ] {
            let e = s.path_of(bad).unwrap_err();
            assert_eq!(e.class, FailureClass::Unrepresentable, "{bad}");
        }
        assert_eq!(s.path_of("a b/ü+%").unwrap(), Path::new("/dest/a b/ü+%"));
    }

    #[tokio::test]
    async fn put_is_atomic_sets_mtime_and_refuses_escapes() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        let outside = d.path().join("outside");
        fs::create_dir_all(&root).unwrap();
        fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
        let s = store(&root);
        let t: DateTime<Utc> = "2020-05-01T10:00:00Z".parse().unwrap();
        let meta = ObjectMeta {
            modified: Some(t),
            ..Default::default()
        };
        s.put("dir/file", Bytes::from_static(b"hello"), &meta, None)
            .await
            .unwrap();
        assert_eq!(fs::read(root.join("dir/file")).unwrap(), b"hello");
        let m = fs::metadata(root.join("dir/file")).unwrap();
        assert_eq!(DateTime::<Utc>::from(m.modified().unwrap()), t);
        let e = s
            .put("link/evil", Bytes::from_static(b"x"), &meta, None)
            .await
            .unwrap_err();
        assert_eq!(e.class, FailureClass::Unrepresentable);
        assert_eq!(
            fs::read_dir(&outside).unwrap().count(),
            0,
            "a write escaped the root"
        );
        // A file where a directory is needed, and the reverse.
        let e = s
            .put("dir/file/sub", Bytes::from_static(b"x"), &meta, None)
            .await
            .unwrap_err();
        assert_eq!(e.class, FailureClass::Unrepresentable);
        let e = s
            .put("dir", Bytes::from_static(b"x"), &meta, None)
            .await
            .unwrap_err();
        assert_eq!(e.class, FailureClass::Unrepresentable);
        // Directory markers become directories.
        s.put("empty/", Bytes::new(), &meta, None).await.unwrap();
        assert!(root.join("empty").is_dir());
        let leftovers: Vec<_> = fs::read_dir(root.join("dir"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers, vec![std::ffi::OsString::from("file")]);
    }
}
