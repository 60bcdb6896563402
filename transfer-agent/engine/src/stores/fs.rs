//! Directory trees: walked in byte order of the whole key (like an S3 listing), written
//! atomically (a temporary file renamed into place), never outside the root.
//!
//! **Containment.** Every path below the root is resolved one component at a time from a
//! descriptor of the root (`openat` with `O_NOFOLLOW`), never by a path string the kernel
//! resolves on its own, so a symbolic link planted in the tree, or swapped in after a
//! listing, cannot lead a read or a write outside it:
//! - writing (files, their temporary files, the directories they need, deletes) never goes
//!   through a symbolic link, not even one that stays inside the root: a component that is a
//!   link is refused (`Unrepresentable`) before anything is created, and the temporary file is
//!   created and renamed relative to the checked directory's descriptor;
//! - reading never descends into a directory through a symbolic link; a symbolic link to a
//!   file is followed only when its canonical target is a regular file inside the canonical
//!   root (and not in Ferry's own `.ferry/` folder). Other links (outside the root, to a
//!   directory, dangling) are skipped by listings, which log how many with a warning, and
//!   refused when read. A followed link is opened by its canonical target with `O_NOFOLLOW`,
//!   and the file opened is checked to be the one at that path (device and inode), so a link
//!   swapped in between the check and the open is caught.
//!
//! The root itself (the configured `path`) may be a symbolic link: it is resolved once.

use std::cell::{Cell, RefCell};
use std::ffi::{CStr, CString, OsStr};
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
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
/// How long a temporary file must have gone unwritten before a listing removes it.
const STALE_TEMP: std::time::Duration = std::time::Duration::from_secs(3600);
const MAX_NAME: usize = 255;
/// Ferry's own folder at the root of a side (reports).
const FERRY_DIR: &str = ".ferry";

/// Modes of what Ferry creates (less the umask): copied files and their directories like
/// `cp`; Ferry's own files (reports, manifests) not readable by others.
const DATA_FILE_MODE: u32 = 0o666;
const DATA_DIR_MODE: u32 = 0o777;
const PRIVATE_FILE_MODE: u32 = 0o640;
const PRIVATE_DIR_MODE: u32 = 0o750;

#[derive(Clone, Debug)]
pub struct FsStore {
    /// The side's root directory, as configured: nothing is read or written outside it.
    root: PathBuf,
    /// The root resolved (symbolic links in the configured path followed), once it exists.
    canonical: Arc<OnceLock<PathBuf>>,
    /// A folder below the root this store stands for ([`Sink::folder`]), as path segments.
    base: Vec<String>,
    /// Ferry's own files (reports): created not readable by others.
    private: bool,
    limits: Arc<Limits>,
}

/// Why a directory below the root could not be opened.
enum DirError {
    Missing,
    /// A component is a symbolic link.
    Link,
    /// A component is not a directory.
    NotDir,
    Io(io::Error),
}

/// What reading a key found.
enum Found {
    File(File),
    Absent,
    /// There is something, but it is not read (a link out of the root, a special file...).
    Refused(&'static str),
}

impl FsStore {
    pub fn new(root: impl Into<PathBuf>, limits: Arc<Limits>) -> FsStore {
        FsStore {
            root: root.into(),
            canonical: Arc::new(OnceLock::new()),
            base: Vec::new(),
            private: false,
            limits,
        }
    }

    /// The path of `key` below the root, refusing keys that are not plain relative paths.
    pub fn path_of(&self, key: &str) -> Result<PathBuf, TransferError> {
        let mut p = self.root.clone();
        for seg in self.segments(key)? {
            p.push(seg);
        }
        Ok(p)
    }

    /// The path segments of `key` below the root (the folder's, then the key's), refusing
    /// keys that are not plain relative paths.
    fn segments(&self, key: &str) -> Result<Vec<String>, TransferError> {
        let trimmed = key.strip_suffix('/').unwrap_or(key);
        if trimmed.is_empty() {
            return Err(unrepresentable("an empty name"));
        }
        let mut out = Vec::with_capacity(self.base.len() + 4);
        for seg in self
            .base
            .iter()
            .map(String::as_str)
            .chain(trimmed.split('/'))
        {
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
                s => out.push(s.to_string()),
            }
        }
        Ok(out)
    }

    /// The root resolved; with `create`, a missing root is created first (it is the
    /// configured path itself, so nothing outside it).
    fn canonical_root(&self, create: bool) -> io::Result<PathBuf> {
        if let Some(p) = self.canonical.get() {
            return Ok(p.clone());
        }
        if create && fs::symlink_metadata(&self.root).is_err() {
            fs::create_dir_all(&self.root)?;
        }
        let p = fs::canonicalize(&self.root)?;
        if !fs::metadata(&p)?.is_dir() {
            return Err(io::Error::from_raw_os_error(libc::ENOTDIR));
        }
        Ok(self.canonical.get_or_init(|| p).clone())
    }

    fn file_mode(&self) -> u32 {
        if self.private {
            PRIVATE_FILE_MODE
        } else {
            DATA_FILE_MODE
        }
    }

    /// Opens the directory `dirs` below the root, one component at a time without following
    /// a symbolic link. With `create`, missing components are made (checked before each one
    /// is made: nothing is created through a link).
    fn open_dir(&self, dirs: &[String], create: bool) -> Result<OwnedFd, DirError> {
        let root = match self.canonical_root(create) {
            Ok(r) => r,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(DirError::Missing),
            Err(e) => return Err(DirError::Io(e)),
        };
        let mut fd = open_path(&root, libc::O_RDONLY | libc::O_DIRECTORY).map_err(DirError::Io)?;
        let mode = if self.private {
            PRIVATE_DIR_MODE
        } else {
            DATA_DIR_MODE
        };
        for name in dirs {
            let c = cname(name);
            let mut tries = 0;
            fd = loop {
                tries += 1;
                match openat(
                    fd.as_fd(),
                    &c,
                    libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
                    0,
                ) {
                    Ok(next) => break next,
                    Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                        if !create {
                            return Err(DirError::Missing);
                        }
                        match mkdirat(fd.as_fd(), &c, mode) {
                            // The new entry made durable, as the file's (`finish_file`).
                            Ok(()) => fsync(fd.as_fd()).map_err(DirError::Io)?,
                            Err(e) if e.raw_os_error() == Some(libc::EEXIST) && tries < 3 => {}
                            Err(e) => return Err(DirError::Io(e)),
                        }
                    }
                    Err(e) => {
                        return Err(match kind_at(fd.as_fd(), &c) {
                            Some(libc::S_IFLNK) => DirError::Link,
                            Some(k) if k != libc::S_IFDIR => DirError::NotDir,
                            _ => DirError::Io(e),
                        })
                    }
                }
                if tries >= 3 {
                    return Err(DirError::Io(io::Error::other(
                        "a directory appeared and vanished while it was created",
                    )));
                }
            };
        }
        Ok(fd)
    }

    /// The directory that holds `segs`' last segment, for writing (created when missing).
    fn dir_for_write(&self, dirs: &[String], create: bool) -> Result<OwnedFd, TransferError> {
        self.open_dir(dirs, create).map_err(|e| match e {
            DirError::Link => unrepresentable(
                "a symbolic link in its path at the destination (Ferry never writes through one)",
            ),
            DirError::NotDir => unrepresentable("a file/directory clash with another key"),
            DirError::Missing => {
                TransferError::io("open", &io::Error::from_raw_os_error(libc::ENOENT))
            }
            DirError::Io(e) => clash(&e),
        })
    }

    /// Opens the file of `key` for reading, by the rules of the module documentation.
    fn open_read(&self, key: &str) -> Result<Found, TransferError> {
        let segs = self.segments(key)?;
        let (name, dirs) = segs.split_last().expect("a key has a segment");
        let dir = match self.open_dir(dirs, false) {
            Ok(d) => d,
            Err(DirError::Missing) | Err(DirError::NotDir) => return Ok(Found::Absent),
            Err(DirError::Link) => {
                return Ok(Found::Refused(
                    "a symbolic link to a directory in its path (not followed)",
                ))
            }
            Err(DirError::Io(e)) => return Err(TransferError::io("open", &e)),
        };
        let c = cname(name);
        match openat(
            dir.as_fd(),
            &c,
            libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK,
            0,
        ) {
            Ok(fd) => {
                let f = File::from(fd);
                let m = f.metadata().map_err(|e| TransferError::io("stat", &e))?;
                Ok(if m.is_file() {
                    Found::File(f)
                } else if m.is_dir() {
                    Found::Absent
                } else {
                    Found::Refused("not a regular file")
                })
            }
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) => {
                Ok(Found::Absent)
            }
            Err(e) => {
                if kind_at(dir.as_fd(), &c) != Some(libc::S_IFLNK) {
                    return Err(TransferError::io("open", &e));
                }
                let root = self
                    .canonical_root(false)
                    .map_err(|e| TransferError::io("resolving the root", &e))?;
                let link = segs.iter().fold(root.clone(), |p, s| p.join(s));
                match followed(&root, &link) {
                    Some(real) => open_checked(&root, &real),
                    None => Ok(Found::Refused(
                        "a symbolic link that does not lead to a file inside the root \
                         (not followed)",
                    )),
                }
            }
        }
    }

    fn temp_name() -> String {
        format!("{TEMP_PREFIX}{:016x}", rand::random::<u64>())
    }

    /// Creates a new temporary file in `dir`.
    fn create_temp(&self, dir: BorrowedFd<'_>) -> Result<(File, CString), TransferError> {
        let tmp = cname(&Self::temp_name());
        let fd = openat(
            dir,
            &tmp,
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW,
            self.file_mode(),
        )
        .map_err(|e| TransferError::io("create", &e))?;
        Ok((File::from(fd), tmp))
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

    /// The temporary file of an upload: its directory (the key's) and its name. Only the
    /// name is taken from the upload id, which must be one of Ferry's temporary files.
    fn upload_temp(&self, up: &Upload) -> Result<(Vec<String>, CString), TransferError> {
        let mut segs = self.segments(&up.key)?;
        segs.pop();
        let name = Path::new(&up.id)
            .file_name()
            .and_then(OsStr::to_str)
            .filter(|n| n.starts_with(TEMP_PREFIX) && !n.contains('\0'))
            .ok_or_else(|| {
                TransferError::new(FailureClass::Internal, "not an upload of this destination")
                    .retryable(false)
            })?;
        Ok((segs, cname(name)))
    }
}

/// The canonical target of the symbolic link `link` when it is a regular file inside the
/// canonical `root` and not in Ferry's own folder; None otherwise.
fn followed(root: &Path, link: &Path) -> Option<PathBuf> {
    let real = fs::canonicalize(link).ok()?;
    let rel = real.strip_prefix(root).ok()?;
    let first = rel.components().next()?;
    if first.as_os_str() == FERRY_DIR
        || rel
            .components()
            .any(|c| c.as_os_str().as_bytes().starts_with(TEMP_PREFIX.as_bytes()))
    {
        return None;
    }
    fs::metadata(&real).ok()?.is_file().then_some(real)
}

/// Opens `real`, a canonical path inside `root`, and checks that the file opened is the one
/// at that path now (a directory of the path swapped for a link in between is caught).
fn open_checked(root: &Path, real: &Path) -> Result<Found, TransferError> {
    let refused = Found::Refused("a symbolic link whose target changed while it was opened");
    let f = match fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(real)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Found::Absent),
        Err(_) => return Ok(refused),
    };
    let m = f.metadata().map_err(|e| TransferError::io("stat", &e))?;
    let still = fs::canonicalize(real).ok();
    let now = fs::metadata(real).ok();
    let same = still.as_deref() == Some(real)
        && real.starts_with(root)
        && now.is_some_and(|n| n.dev() == m.dev() && n.ino() == m.ino());
    Ok(if !same {
        refused
    } else if m.is_file() {
        Found::File(f)
    } else {
        Found::Refused("not a regular file")
    })
}

/// A validated path segment (no NUL: [`FsStore::segments`] refuses them) as a C string.
fn cname(name: &str) -> CString {
    CString::new(name).expect("segments have no NUL byte")
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn open_path(path: &Path, flags: libc::c_int) -> io::Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `c` is a valid C string; the descriptor returned is owned by us alone.
    let fd = cvt(unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC) })?;
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn openat(dir: BorrowedFd<'_>, name: &CStr, flags: libc::c_int, mode: u32) -> io::Result<OwnedFd> {
    // SAFETY: `name` is a valid C string and `dir` an open descriptor; the descriptor
    // returned is owned by us alone.
    let fd = cvt(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            flags | libc::O_CLOEXEC,
            mode as libc::c_uint,
        )
    })?;
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn mkdirat(dir: BorrowedFd<'_>, name: &CStr, mode: u32) -> io::Result<()> {
    // SAFETY: `name` is a valid C string and `dir` an open descriptor.
    cvt(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode as libc::mode_t) }).map(|_| ())
}

fn renameat(dir: BorrowedFd<'_>, from: &CStr, to: &CStr) -> io::Result<()> {
    // SAFETY: valid C strings and an open descriptor.
    cvt(unsafe { libc::renameat(dir.as_raw_fd(), from.as_ptr(), dir.as_raw_fd(), to.as_ptr()) })
        .map(|_| ())
}

fn unlinkat(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    // SAFETY: a valid C string and an open descriptor.
    cvt(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), 0) }).map(|_| ())
}

/// The file type (`S_IFMT` bits) of `name` in `dir`, without following a link.
fn kind_at(dir: BorrowedFd<'_>, name: &CStr) -> Option<libc::mode_t> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: a valid C string, an open descriptor and room for a stat.
    let r = unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            st.as_mut_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    // SAFETY: fstatat filled `st` when it returned 0.
    (r == 0).then(|| unsafe { st.assume_init() }.st_mode & libc::S_IFMT)
}

#[async_trait::async_trait]
impl Source for FsStore {
    fn describe(&self) -> String {
        self.base
            .iter()
            .fold(self.root.clone(), |p, s| p.join(s))
            .display()
            .to_string()
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
        let me = self.clone();
        tokio::task::spawn_blocking(move || {
            let fail = |e: &io::Error| {
                let _ = tx.blocking_send(Err(TransferError::io(
                    &format!("listing {}", me.describe()),
                    e,
                )
                .fatal()));
            };
            let root = match me.canonical_root(false) {
                Ok(r) => r,
                Err(e) => return fail(&e),
            };
            let start = me.base.iter().fold(root.clone(), |p, s| p.join(s));
            // The folder itself is reached through no link either.
            if !me.base.is_empty() && fs::canonicalize(&start).is_ok_and(|c| c != start) {
                return fail(&io::Error::other(
                    "a symbolic link in the path of the folder (not followed)",
                ));
            }
            let walk = Walk {
                tx: &tx,
                after: after.as_deref(),
                until: until.as_deref(),
                root: &root,
                hide_ferry: me.base.is_empty(),
                skipped: Cell::new(0),
                examples: RefCell::new(Vec::new()),
            };
            let res = walk.dir(&start, "");
            let skipped = walk.skipped.get();
            if skipped > 0 {
                tracing::warn!(
                    root = %me.describe(),
                    skipped,
                    examples = ?walk.examples.borrow(),
                    "symbolic links not followed (they lead outside the root, to a directory, \
                     or nowhere): not listed, not copied"
                );
            }
            if let Err(e) = res {
                fail(&e);
            }
        });
        super::channel_stream(rx)
    }

    async fn head(&self, key: &str) -> Result<Option<(ObjectInfo, ObjectMeta)>, TransferError> {
        if self.segments(key).is_err() {
            return Ok(None);
        }
        let me = self.clone();
        let key = key.to_string();
        blocking(move || match me.open_read(&key)? {
            Found::File(f) => {
                let m = f.metadata().map_err(|e| TransferError::io("stat", &e))?;
                let info = info_from(&key, &m);
                let meta = meta_for(&key, info.modified);
                Ok(Some((info, meta)))
            }
            Found::Absent | Found::Refused(_) => Ok(None),
        })
        .await
    }

    async fn get(
        &self,
        key: &str,
        offset: u64,
        len: u64,
        whole: bool,
        etag: Option<&str>,
        mut buffer: Buffer,
    ) -> Result<Body, TransferError> {
        self.segments(key)?;
        self.limits.bandwidth(len).await;
        let me = self.clone();
        let key = key.to_string();
        let listed = etag.map(str::to_string);
        blocking(move || {
            let f = match me.open_read(&key)? {
                Found::File(f) => f,
                Found::Absent => {
                    return Err(TransferError::io(
                        "open",
                        &io::Error::from_raw_os_error(libc::ENOENT),
                    ))
                }
                Found::Refused(why) => {
                    return Err(TransferError::new(
                        FailureClass::Unrepresentable,
                        format!("not read: {why}"),
                    )
                    .retryable(false))
                }
            };
            let buf = buffer.zeroed(len as usize);
            let m = read_one_version(&f, offset, buf, whole, listed.as_deref(), || {})?;
            let modified = m.modified().ok().map(DateTime::<Utc>::from);
            Ok(Body {
                bytes: buffer.freeze(),
                md5: None,
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
        let mut segs = self.segments(key)?;
        let me = self.clone();
        let key = key.to_string();
        let modified = meta.modified;
        blocking(move || {
            if key.ends_with('/') {
                // A zero-byte "directory marker" object becomes a directory.
                if !body.is_empty() {
                    return Err(unrepresentable("a name ending in '/' with content"));
                }
                me.dir_for_write(&segs, true)?;
                return Ok(());
            }
            let name = cname(&segs.pop().expect("a key has a segment"));
            let dir = me.dir_for_write(&segs, true)?;
            let (mut f, tmp) = me.create_temp(dir.as_fd())?;
            let res = f
                .write_all(&body)
                .map_err(|e| TransferError::io("write", &e))
                .and_then(|()| {
                    finish_file(f, dir.as_fd(), &tmp, &name, body.len() as u64, modified)
                });
            if res.is_err() {
                let _ = unlinkat(dir.as_fd(), &tmp);
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
        let mut segs = self.segments(key)?;
        let me = self.clone();
        let key = key.to_string();
        blocking(move || {
            segs.pop();
            let dir = me.dir_for_write(&segs, true)?;
            let (f, tmp) = me.create_temp(dir.as_fd())?;
            if let Err(e) = f.set_len(size) {
                let _ = unlinkat(dir.as_fd(), &tmp);
                return Err(TransferError::io("allocate", &e));
            }
            let path = segs
                .iter()
                .fold(me.root.clone(), |p, s| p.join(s))
                .join(OsStr::from_bytes(tmp.as_bytes()));
            Ok(Upload {
                key,
                id: path.to_string_lossy().into_owned(),
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
        let (dirs, tmp) = self.upload_temp(up)?;
        let me = self.clone();
        blocking(move || {
            let dir = me.dir_for_write(&dirs, false)?;
            let f = File::from(
                openat(dir.as_fd(), &tmp, libc::O_WRONLY | libc::O_NOFOLLOW, 0)
                    .map_err(|e| TransferError::io("open", &e))?,
            );
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
        let (dirs, tmp) = self.upload_temp(up)?;
        let mut segs = self.segments(&up.key)?;
        let name = cname(&segs.pop().expect("a key has a segment"));
        let modified = meta.modified;
        let me = self.clone();
        blocking(move || {
            let dir = me.dir_for_write(&dirs, false)?;
            let res = openat(dir.as_fd(), &tmp, libc::O_RDONLY | libc::O_NOFOLLOW, 0)
                .map_err(|e| TransferError::io("open", &e))
                .and_then(|fd| {
                    finish_file(File::from(fd), dir.as_fd(), &tmp, &name, size, modified)
                });
            if res.is_err() {
                let _ = unlinkat(dir.as_fd(), &tmp);
            }
            res
        })
        .await
        .map(|_| None)
    }

    async fn abort_upload(&self, up: &Upload) {
        // Only ever remove Ferry's own temporary files, and never through a link.
        let Ok((dirs, tmp)) = self.upload_temp(up) else {
            return;
        };
        let me = self.clone();
        let _ = blocking(move || {
            if let Ok(dir) = me.open_dir(&dirs, false) {
                let _ = unlinkat(dir.as_fd(), &tmp);
            }
            Ok(())
        })
        .await;
    }

    async fn delete(&self, key: &str) -> Result<(), TransferError> {
        let mut segs = self.segments(key)?;
        let me = self.clone();
        blocking(move || {
            let name = cname(&segs.pop().expect("a key has a segment"));
            let dir = match me.open_dir(&segs, false) {
                Ok(d) => d,
                Err(DirError::Missing) | Err(DirError::NotDir) => return Ok(()),
                Err(DirError::Link) => {
                    return Err(unrepresentable(
                        "a symbolic link in its path at the destination (Ferry never deletes \
                         through one)",
                    ))
                }
                Err(DirError::Io(e)) => return Err(TransferError::io("delete", &e)),
            };
            match unlinkat(dir.as_fd(), &name) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(TransferError::io("delete", &e)),
            }
        })
        .await
    }

    async fn probe_destination(&self, dry_run: bool) -> Result<(), TransferError> {
        self.check(!dry_run, dry_run).await
    }

    /// Ferry's own folder (reports): below the same root, with the same containment, and
    /// its files and directories created not readable by others.
    fn folder(&self, folder: &str) -> Arc<dyn Sink> {
        Arc::new(FsStore {
            base: folder
                .split('/')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
            private: true,
            ..self.clone()
        })
    }
}

/// What identifies one version of a file: a write, a truncation or a replacement changes it
/// (`mtime` and `ctime` in nanoseconds, as the file system keeps them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Version {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Version {
    /// The version as an opaque tag, the file's ETag: what the listing saw, handed back on
    /// every read of the object (never MD5-shaped, so never compared as a checksum).
    fn tag(&self) -> String {
        format!(
            "fsv1-{:x}-{:x}-{}-{}.{}-{}.{}",
            self.dev, self.ino, self.size, self.mtime.0, self.mtime.1, self.ctime.0, self.ctime.1
        )
    }

    fn of(m: &fs::Metadata) -> Version {
        Version {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }
}

/// The file changed while it was read, or since it was listed: its bytes are not one version
/// of it, so they are never counted as copied. Like S3's 412 on `If-Match`: the copier looks
/// the file up again and copies the version it finds then (a file that keeps changing ends
/// `SourceVanished`, "kept changing", in the failure report).
fn source_changed(why: String) -> TransferError {
    TransferError::new(
        FailureClass::SourceVanished,
        format!("the file changed while it was read: {why}"),
    )
    .with_code("SourceChanged")
    .changed()
}

/// Fills `buf` from `f` at `offset`, from one version of the file (issue 13, mode 10): the
/// file's size, times and inode after the read must be those before it, and the range must
/// lie inside the file (a `whole` read must be the whole file: `buf` has the listing's size),
/// and, when the caller says which version it listed (`listed`, its [`Version::tag`]: the
/// parts of one multipart copy all pass the same), the file must still be that version, so
/// parts read one after the other are never stitched from two versions of a file rewritten
/// in place at the same size. `mid` runs between the two looks (a test's writer). Returns
/// the metadata of the version.
fn read_one_version(
    f: &File,
    offset: u64,
    buf: &mut [u8],
    whole: bool,
    listed: Option<&str>,
    mid: impl FnOnce(),
) -> Result<fs::Metadata, TransferError> {
    let len = buf.len() as u64;
    let m = f.metadata().map_err(|e| TransferError::io("stat", &e))?;
    let before = Version::of(&m);
    if listed.is_some_and(|tag| tag != before.tag()) {
        return Err(source_changed(
            "it is not the version that was listed (written to, or replaced, since)".into(),
        ));
    }
    if whole && offset == 0 && before.size != len {
        return Err(source_changed(format!(
            "it has {} bytes, it had {len} when it was listed",
            before.size
        )));
    }
    if offset + len > before.size {
        return Err(source_changed(format!(
            "it has {} bytes, bytes {offset} to {} were to be read",
            before.size,
            offset + len
        )));
    }
    mid();
    let mut done = 0usize;
    while done < buf.len() {
        let n = f
            .read_at(&mut buf[done..], offset + done as u64)
            .map_err(|e| TransferError::io("read", &e))?;
        if n == 0 {
            return Err(source_changed(format!(
                "it ended after {} bytes, {} were to be read",
                offset + done as u64,
                offset + len
            )));
        }
        done += n;
    }
    let after = Version::of(&f.metadata().map_err(|e| TransferError::io("stat", &e))?);
    if after != before {
        return Err(source_changed(if after.size != before.size {
            format!("{} bytes when opened, {} after", before.size, after.size)
        } else {
            "written to (its modification or change time moved)".into()
        }));
    }
    Ok(m)
}

/// Files and directories whose data went to stable storage (`fsync`), by (device, inode), so
/// tests can see that a write is durable before it is reported done.
#[cfg(test)]
static SYNCED: std::sync::Mutex<Vec<(u64, u64)>> = std::sync::Mutex::new(Vec::new());

/// `fsync(fd)`: the file's data and metadata, or a directory's entries, on stable storage.
fn fsync(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: an open descriptor.
    cvt(unsafe { libc::fsync(fd.as_raw_fd()) })?;
    #[cfg(test)]
    {
        let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
        // SAFETY: an open descriptor and room for a stat, filled when fstat returns 0.
        if unsafe { libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()) } == 0 {
            let st = unsafe { st.assume_init() };
            SYNCED.lock().unwrap().push((st.st_dev, st.st_ino));
        }
    }
    Ok(())
}

fn sync(fd: BorrowedFd<'_>, what: &str) -> Result<(), TransferError> {
    fsync(fd).map_err(|e| TransferError::io(what, &e))
}

/// Checks the size, sets the modification time, syncs the file, renames the temporary file
/// `tmp` of `dir` into place as `name` (relative to the checked directory's descriptor) and
/// syncs the directory: once this returns, the file is on stable storage under its name, so
/// a checkpoint that moves past it never points at data a node crash could lose (issue 13,
/// mode 10).
fn finish_file(
    f: File,
    dir: BorrowedFd<'_>,
    tmp: &CStr,
    name: &CStr,
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
    sync(f.as_fd(), "fsync")?;
    drop(f);
    renameat(dir, tmp, name).map_err(|e| clash(&e))?;
    sync(dir, "fsync of the directory")
}

fn unrepresentable(why: &str) -> TransferError {
    TransferError::new(
        FailureClass::Unrepresentable,
        format!("the key cannot be a file: it has {why}"),
    )
    .retryable(false)
}

/// A file where a directory must go or the reverse.
fn clash(e: &io::Error) -> TransferError {
    use std::io::ErrorKind::*;
    match e.kind() {
        NotADirectory | IsADirectory | AlreadyExists | DirectoryNotEmpty => {
            unrepresentable("a file/directory clash with another key")
        }
        _ if e.raw_os_error() == Some(libc::EISDIR)
            || e.raw_os_error() == Some(libc::ENOTDIR)
            || e.raw_os_error() == Some(libc::ENOTEMPTY) =>
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
        etag: Some(Version::of(m).tag()),
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
/// `a/x`, as in an S3 listing). Directories are entered only when they are reached through
/// no symbolic link; links to files are listed only when [`followed`] allows them.
struct Walk<'a> {
    tx: &'a mpsc::Sender<Result<ObjectInfo, TransferError>>,
    after: Option<&'a str>,
    until: Option<&'a str>,
    /// The canonical root: the walk starts at it or below it.
    root: &'a Path,
    /// Leave out `.ferry/` at the top (a side's root, not a folder of it).
    hide_ferry: bool,
    /// Symbolic links not followed, and a few of their keys for the log.
    skipped: Cell<u64>,
    examples: RefCell<Vec<String>>,
}

enum Flow {
    Go,
    Stop,
}

enum Entry {
    Dir,
    File,
    /// A symbolic link to a file inside the root: its canonical target.
    Link(PathBuf),
}

impl Walk<'_> {
    fn skip(&self, key: String) {
        self.skipped.set(self.skipped.get() + 1);
        let mut ex = self.examples.borrow_mut();
        if ex.len() < 5 {
            ex.push(key);
        }
    }

    fn dir(&self, path: &Path, prefix: &str) -> io::Result<Flow> {
        let mut entries: Vec<(Vec<u8>, PathBuf, Entry, bool)> = Vec::new();
        for entry in fs::read_dir(path)? {
            let entry = entry?;
            let name = entry.file_name();
            let bytes = name.as_bytes();
            if self.hide_ferry && prefix.is_empty() && bytes == FERRY_DIR.as_bytes() {
                continue;
            }
            if bytes.starts_with(TEMP_PREFIX.as_bytes()) {
                // Never a user's file, never complete: skipped. Removed only when nobody has
                // written it for an hour (left by a run that was killed): a fresh one may be
                // another writer's (another job into the same tree) under way.
                let stale = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age > STALE_TEMP);
                if stale {
                    let _ = fs::remove_file(entry.path());
                }
                continue;
            }
            let ft = entry.file_type()?;
            let kind = if ft.is_symlink() {
                match followed(self.root, &entry.path()) {
                    Some(real) => Entry::Link(real),
                    None => {
                        self.skip(format!("{prefix}{}", String::from_utf8_lossy(bytes)));
                        continue;
                    }
                }
            } else if ft.is_dir() {
                Entry::Dir
            } else if ft.is_file() {
                Entry::File
            } else {
                continue;
            };
            let mut sort = bytes.to_vec();
            if matches!(kind, Entry::Dir) {
                sort.push(b'/');
            }
            entries.push((sort, entry.path(), kind, std::str::from_utf8(bytes).is_ok()));
        }
        entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        for (sort, p, kind, utf8) in entries {
            let key = format!("{prefix}{}", String::from_utf8_lossy(&sort));
            let is_dir = matches!(kind, Entry::Dir);
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
                // Swapped for a link since it was read: not entered.
                if !fs::canonicalize(&p).is_ok_and(|c| c == p) {
                    self.skip(key);
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
            let stat = match &kind {
                Entry::Link(real) => fs::metadata(real),
                _ => fs::symlink_metadata(&p),
            };
            let item = match stat {
                Ok(m) if m.is_file() => {
                    let mut info = info_from(&key, &m);
                    if !utf8 {
                        info.invalid = Some("the file name is not valid UTF-8".into());
                    }
                    Ok(info)
                }
                // Changed since it was read (now a link, a directory...): as if gone.
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
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

    /// Reads `len` bytes at `offset` of a 4096-byte file while `write` changes it: the error.
    fn read_while(
        offset: u64,
        len: usize,
        whole: bool,
        write: impl FnOnce(&Path),
    ) -> TransferError {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        fs::write(&p, vec![b'a'; 4096]).unwrap();
        let f = File::open(&p).unwrap();
        let mut buf = vec![0u8; len];
        let e = read_one_version(&f, offset, &mut buf, whole, None, || write(&p));
        // Left alone, the same file reads as one version.
        let size = f.metadata().unwrap().len() as usize;
        read_one_version(&f, 0, &mut vec![0u8; size], true, None, || {}).unwrap();
        e.unwrap_err()
    }

    fn append(p: &Path) {
        let mut w = fs::OpenOptions::new().append(true).open(p).unwrap();
        w.write_all(b"more").unwrap();
    }

    /// Issue 13, mode 10: bytes read while the file grew, or was rewritten in place (same
    /// size: its modification time moves), are not one version of it.
    #[test]
    fn a_file_changed_while_it_is_read_is_not_one_version() {
        let e = read_while(0, 4096, true, append);
        assert!(e.changed, "{e:?}");
        assert_eq!(e.class, FailureClass::SourceVanished);
        assert!(
            e.message.contains("4096 bytes when opened, 4100 after"),
            "{e}"
        );
        // A part of it, too.
        assert!(read_while(100, 1000, false, append).changed);
        let e = read_while(0, 4096, true, |p| {
            // Past the file system's timestamp granularity (a clock tick).
            std::thread::sleep(std::time::Duration::from_millis(50));
            let w = fs::OpenOptions::new().write(true).open(p).unwrap();
            w.write_all_at(b"bbbb", 2000).unwrap();
        });
        assert!(e.changed && e.message.contains("written to"), "{e:?}");
    }

    /// The parts of one copy are read one after the other: each must come from the version
    /// the listing saw (its ETag), so a file rewritten in place at the same size between two
    /// parts is a changed source, never bytes stitched from two versions.
    #[tokio::test]
    async fn parts_are_read_from_the_version_listed() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("k");
        fs::write(&p, b"aaaaaaaa").unwrap();
        let s = store(d.path());
        let l = Limits::unlimited();
        let (listed, _) = s.head("k").await.unwrap().unwrap();
        let tag = listed.etag.clone().unwrap();
        assert!(
            listed.plain_md5().is_none(),
            "a version tag is no MD5: {tag}"
        );
        let first = s.get("k", 0, 4, false, Some(&tag), l.buffer(4).await);
        assert_eq!(&first.await.unwrap().bytes[..], b"aaaa");
        // Past the file system's timestamp granularity, then the same size rewritten.
        std::thread::sleep(std::time::Duration::from_millis(50));
        fs::OpenOptions::new()
            .write(true)
            .open(&p)
            .unwrap()
            .write_all_at(b"bbbb", 4)
            .unwrap();
        let e = s
            .get("k", 4, 4, false, Some(&tag), l.buffer(4).await)
            .await
            .err()
            .unwrap();
        assert!(
            e.changed && e.message.contains("not the version that was listed"),
            "{e:?}"
        );
        // Looked up again, the new version reads.
        let (now, _) = s.head("k").await.unwrap().unwrap();
        assert_ne!(now.etag, listed.etag);
        let again = s.get("k", 4, 4, false, now.etag.as_deref(), l.buffer(4).await);
        assert_eq!(&again.await.unwrap().bytes[..], b"bbbb");
    }

    /// A file of another size than listed, or shorter than the part to read, is a changed
    /// source (looked up again), not a short body retried in place.
    #[tokio::test]
    async fn a_file_of_another_size_than_listed_is_a_changed_source() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("k"), b"0123456789").unwrap();
        let s = store(d.path());
        let l = Limits::unlimited();
        // Listed with 8 bytes, 10 now.
        let e = s
            .get("k", 0, 8, true, None, l.buffer(8).await)
            .await
            .err()
            .unwrap();
        assert!(
            e.changed && e.message.contains("it had 8 when it was listed"),
            "{e:?}"
        );
        // A part past its end (it shrank).
        let e = s
            .get("k", 8, 4, false, None, l.buffer(4).await)
            .await
            .err()
            .unwrap();
        assert!(e.changed, "{e:?}");
        // As listed: read.
        let b = s
            .get("k", 0, 10, true, None, l.buffer(10).await)
            .await
            .unwrap();
        assert_eq!(&b.bytes[..], b"0123456789");
        let b = s
            .get("k", 2, 3, false, None, l.buffer(3).await)
            .await
            .unwrap();
        assert_eq!(&b.bytes[..], b"234");
    }

    /// The copier, given a listing entry of a file that changed since, copies the version
    /// there is now and never reports the listed one as verified.
    #[tokio::test]
    async fn a_file_changed_since_it_was_listed_is_copied_as_it_is_now() {
        use crate::copy::{Copied, Copier};
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("k"), b"first").unwrap();
        let src = Arc::new(store(d.path()));
        let (listed, _) = src.head("k").await.unwrap().unwrap();
        fs::write(d.path().join("k"), b"second, longer").unwrap();
        let out = tempfile::tempdir().unwrap();
        let dst = Arc::new(store(out.path()));
        let copier = Copier {
            src: src.clone(),
            dst: dst.clone(),
            threshold: 64 << 20,
            part_size: 16 << 20,
            verify: ferry_core::VerifyMode::Checksum,
            server: None,
            limits: Arc::new(Limits::unlimited()),
            retry: Default::default(),
            uploads: Default::default(),
            bytes_moved: Default::default(),
        };
        let got = copier.copy(&listed).await.unwrap();
        let Copied::Done { checksum } = got else {
            panic!("{got:?}")
        };
        assert_eq!(
            checksum,
            hex::encode(<md5::Md5 as md5::Digest>::digest(b"second, longer"))
        );
        assert_eq!(fs::read(out.path().join("k")).unwrap(), b"second, longer");
    }

    fn id(p: &Path) -> (u64, u64) {
        let m = fs::metadata(p).unwrap();
        (m.dev(), m.ino())
    }

    /// A written file, and the directory entries that name it (its directory, and the
    /// directories created for it), are synced before the write is reported done.
    #[tokio::test]
    async fn writes_are_synced_before_they_are_done() {
        let d = tempfile::tempdir().unwrap();
        let s = store(d.path());
        s.put(
            "new/dir/k",
            Bytes::from_static(b"data"),
            &ObjectMeta::default(),
            None,
        )
        .await
        .unwrap();
        let synced = SYNCED.lock().unwrap().clone();
        for p in ["new/dir/k", "new/dir", "new", ""] {
            assert!(
                synced.contains(&id(&d.path().join(p))),
                "{p:?} was not synced"
            );
        }
        // The multipart path too.
        let up = s
            .create_upload("m", &ObjectMeta::default(), 8)
            .await
            .unwrap();
        s.upload_part(&up, 1, 0, Bytes::from_static(b"abcd"), None)
            .await
            .unwrap();
        s.upload_part(&up, 2, 4, Bytes::from_static(b"efgh"), None)
            .await
            .unwrap();
        s.complete_upload(&up, vec![], 8, &ObjectMeta::default())
            .await
            .unwrap();
        assert_eq!(fs::read(d.path().join("m")).unwrap(), b"abcdefgh");
        assert!(SYNCED.lock().unwrap().contains(&id(&d.path().join("m"))));
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

    /// Temporary files are never listed; a stale one (a killed run's) is removed, a fresh
    /// one (another writer's, under way) is left alone.
    #[tokio::test]
    async fn listing_skips_ferry_dir_and_sweeps_only_stale_temp_files() {
        let d = tempfile::tempdir().unwrap();
        touch(d.path(), ".ferry/reports/x");
        touch(d.path(), "k/.ferry-tmp.0123");
        touch(d.path(), "k/.ferry-tmp.live");
        touch(d.path(), "k/v");
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
        fs::File::options()
            .write(true)
            .open(d.path().join("k/.ferry-tmp.0123"))
            .unwrap()
            .set_modified(old)
            .unwrap();
        assert_eq!(keys(&store(d.path()), None, None).await, vec!["k/v"]);
        assert!(!d.path().join("k/.ferry-tmp.0123").exists());
        assert!(
            d.path().join("k/.ferry-tmp.live").exists(),
            "another writer's"
        );
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

    fn meta() -> ObjectMeta {
        ObjectMeta::default()
    }

    async fn read_all(s: &FsStore, key: &str) -> Result<Vec<u8>, TransferError> {
        let len = match s.head(key).await? {
            Some((info, _)) => info.size,
            // Read anyway: `get` must refuse on its own (a key from a retry list).
            None => 64,
        };
        s.get(key, 0, len, true, None, Buffer::unbudgeted(len))
            .await
            .map(|b| b.bytes.to_vec())
    }

    fn tree_of(dir: &Path) -> Vec<String> {
        fn walk(dir: &Path, base: &Path, out: &mut Vec<String>) {
            for e in fs::read_dir(dir).unwrap() {
                let p = e.unwrap().path();
                out.push(p.strip_prefix(base).unwrap().display().to_string());
                if fs::symlink_metadata(&p).unwrap().is_dir() {
                    walk(&p, base, out);
                }
            }
        }
        let mut out = Vec::new();
        walk(dir, dir, &mut out);
        out.sort();
        out
    }

    /// I4: a planted `root/link -> /outside` with a multi-level key used to create
    /// `/outside/a/b` before the key was refused. Nothing may be made, written or deleted
    /// through a link, whatever its depth.
    #[tokio::test]
    async fn a_planted_link_in_the_destination_leads_nothing_outside() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        let outside = d.path().join("outside");
        fs::create_dir_all(root.join("real")).unwrap();
        fs::create_dir_all(&outside).unwrap();
        fs::write(outside.join("victim"), b"keep me").unwrap();
        std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
        let s = store(&root);
        let body = || Bytes::from_static(b"x");
        for key in ["link/a/b/f", "link/f", "link/victim"] {
            let e = s.put(key, body(), &meta(), None).await.unwrap_err();
            assert_eq!(e.class, FailureClass::Unrepresentable, "{key}: {e}");
        }
        let e = s.put("link/a/b/", Bytes::new(), &meta(), None).await;
        assert!(e.is_err(), "a folder marker through a link");
        let e = s.create_upload("link/a/b/big", &meta(), 10).await;
        assert!(e.is_err(), "an upload through a link");
        let e = s.delete("link/victim").await;
        assert!(e.is_err(), "a delete through a link");
        assert_eq!(
            tree_of(&outside),
            vec!["victim"],
            "something changed outside"
        );
        assert_eq!(fs::read(outside.join("victim")).unwrap(), b"keep me");
        // A link that stays inside the root is not written through either.
        std::os::unix::fs::symlink(root.join("real"), root.join("alias")).unwrap();
        let e = s.put("alias/f", body(), &meta(), None).await.unwrap_err();
        assert_eq!(e.class, FailureClass::Unrepresentable);
        assert!(tree_of(&root.join("real")).is_empty());
        // A key whose last segment is a link replaces the link, not its target.
        std::os::unix::fs::symlink(outside.join("victim"), root.join("file-link")).unwrap();
        s.put("file-link", body(), &meta(), None).await.unwrap();
        assert_eq!(fs::read(root.join("file-link")).unwrap(), b"x");
        assert!(!fs::symlink_metadata(root.join("file-link"))
            .unwrap()
            .is_symlink());
        assert_eq!(fs::read(outside.join("victim")).unwrap(), b"keep me");
    }

    /// I4: a directory swapped for a link while an upload in parts is under way: the parts
    /// and the rename go to the checked directory or fail, never outside.
    #[tokio::test]
    async fn an_upload_does_not_follow_a_directory_swapped_for_a_link() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        let outside = d.path().join("outside");
        fs::create_dir_all(&root).unwrap();
        fs::create_dir_all(&outside).unwrap();
        let s = store(&root);
        let up = s.create_upload("d/f", &meta(), 4).await.unwrap();
        let tmp_name = Path::new(&up.id).file_name().unwrap().to_owned();
        // The attacker moves the directory away and plants a link with a file of the
        // temporary file's name at the other end.
        fs::rename(root.join("d"), d.path().join("moved")).unwrap();
        fs::write(outside.join(&tmp_name), b"....").unwrap();
        std::os::unix::fs::symlink(&outside, root.join("d")).unwrap();
        let part = s.upload_part(&up, 1, 0, Bytes::from_static(b"data"), None);
        assert!(part.await.is_err(), "a part was written through a link");
        let done = s.complete_upload(&up, vec![], 4, &meta()).await;
        assert!(done.is_err(), "an upload was completed through a link");
        s.abort_upload(&up).await;
        assert_eq!(
            tree_of(&outside),
            vec![tmp_name.to_string_lossy().to_string()]
        );
        assert_eq!(fs::read(outside.join(&tmp_name)).unwrap(), b"....");
    }

    /// I3: a source tree with a link to a secret outside it (`~/.aws/credentials`): not
    /// listed, not read, by key or by a retry list.
    #[tokio::test]
    async fn a_source_link_to_a_file_outside_the_root_is_not_followed() {
        let d = tempfile::tempdir().unwrap();
        let home = d.path().join("home");
        let src = d.path().join("src");
        touch(&home, ".aws/credentials");
        touch(&src, "ok.txt");
        std::os::unix::fs::symlink(home.join(".aws/credentials"), src.join("creds")).unwrap();
        std::os::unix::fs::symlink(home.join(".aws"), src.join("aws")).unwrap();
        std::os::unix::fs::symlink(d.path().join("nowhere"), src.join("dangling")).unwrap();
        let s = store(&src);
        assert_eq!(keys(&s, None, None).await, vec!["ok.txt"]);
        for key in ["creds", "aws/credentials", "dangling"] {
            assert!(s.head(key).await.unwrap().is_none(), "{key}");
            let e = read_all(&s, key).await.unwrap_err();
            assert!(
                matches!(
                    e.class,
                    FailureClass::Unrepresentable | FailureClass::SourceVanished
                ),
                "{key}: {e}"
            );
        }
        assert_eq!(read_all(&s, "ok.txt").await.unwrap(), b"ok.txt");
    }

    /// I3: links inside the root. A link to a file inside is copied as a file (the target's
    /// bytes under the link's key); a link to a directory, even inside, is never entered; a
    /// link to Ferry's own folder is not followed.
    #[tokio::test]
    async fn a_source_link_inside_the_root_is_followed_to_files_only() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        touch(&src, "sub/real.txt");
        touch(&src, ".ferry/reports/r");
        std::os::unix::fs::symlink("sub/real.txt", src.join("alias")).unwrap();
        std::os::unix::fs::symlink("sub", src.join("dirlink")).unwrap();
        std::os::unix::fs::symlink(".ferry/reports/r", src.join("report")).unwrap();
        let s = store(&src);
        assert_eq!(keys(&s, None, None).await, vec!["alias", "sub/real.txt"]);
        assert_eq!(read_all(&s, "alias").await.unwrap(), b"sub/real.txt");
        assert!(s.head("dirlink/real.txt").await.unwrap().is_none());
        assert!(read_all(&s, "dirlink/real.txt").await.is_err());
        assert!(read_all(&s, "report").await.is_err());
    }

    /// I3: a file swapped for a link after the listing, and a directory swapped for a link
    /// after the listing: reads refuse both.
    #[tokio::test]
    async fn a_link_swapped_in_after_the_listing_is_not_followed_out() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        let outside = d.path().join("outside");
        touch(&outside, "secret");
        touch(&outside, "d/f");
        touch(&src, "f");
        touch(&src, "d/f");
        let s = store(&src);
        assert_eq!(keys(&s, None, None).await, vec!["d/f", "f"]);
        fs::remove_file(src.join("f")).unwrap();
        std::os::unix::fs::symlink(outside.join("secret"), src.join("f")).unwrap();
        fs::remove_dir_all(src.join("d")).unwrap();
        std::os::unix::fs::symlink(outside.join("d"), src.join("d")).unwrap();
        for key in ["f", "d/f"] {
            let got = read_all(&s, key).await;
            assert!(got.is_err(), "{key} read outside the root: {got:?}");
        }
    }

    /// S4: Ferry's own files (the report folder) are not readable by others, and are kept
    /// inside the root like every other write.
    #[tokio::test]
    async fn reports_are_private_and_contained() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        fs::create_dir_all(&root).unwrap();
        let folder = |root: &Path| store(root).folder(".ferry/reports/ns/job/uid/shard-0/");
        let write = |f: Arc<dyn Sink>| async move {
            let body = Bytes::from_static(b"{}\n");
            f.put("failures-000000.jsonl", body, &meta(), None).await
        };
        let reports = folder(&root);
        write(reports.clone()).await.unwrap();
        let file = root.join(".ferry/reports/ns/job/uid/shard-0/failures-000000.jsonl");
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&file) & 0o007, 0, "report mode {:o}", mode(&file));
        assert_eq!(mode(&root.join(".ferry")) & 0o007, 0);
        // The folder lists and reads back through the same containment.
        let got: Vec<String> = reports
            .list(None, None)
            .map(|r| r.unwrap().key)
            .collect()
            .await;
        assert_eq!(got, vec!["failures-000000.jsonl"]);
        // A planted `.ferry` link: the report is refused, nothing is written outside.
        let other = d.path().join("other");
        let outside = d.path().join("outside");
        fs::create_dir_all(&other).unwrap();
        fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, other.join(".ferry")).unwrap();
        let e = write(folder(&other)).await.unwrap_err();
        assert_eq!(e.class, FailureClass::Unrepresentable);
        assert!(tree_of(&outside).is_empty());
    }
}
