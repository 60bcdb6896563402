//! A real PostgreSQL server for the tests: `initdb` into a temporary directory, then the
//! server on a free loopback port, password authentication over TCP, a database of its own for
//! each test ([`Postgres::database`]). PostgreSQL refuses to run as root, so as root both run
//! as the `postgres` user (`runuser`).
//!
//! Self-contained (std and tempfile only): test crates that do not link this support library
//! include it with `#[path]`. The binaries come from `FERRY_TEST_PG_BIN` (a directory), else
//! the directory of `initdb` on PATH, else Debian's `/usr/lib/postgresql/*/bin` (`tests/run.sh`
//! installs the `postgresql` package when it is missing). When no server can be started the
//! tests print a notice and skip, as with the other servers.
//!
//! As in `server.rs`, the server runs under a small `sh` wrapper that reads its stdin until
//! end of file and then stops it: when the test process ends, however it ends, the pipe
//! closes and the server goes away.

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// The superuser the tests connect as, and its password (made up; the tests check that it is
/// never printed).
pub const USER: &str = "ferry";
pub const PASSWORD: &str = "pw-Zq81xV0tKj";

/// A running server. Dropping it (or ending the process) stops it and removes its files.
pub struct Postgres {
    pub port: u16,
    bin: PathBuf,
    /// Dropped first: closes the wrapper's stdin, which stops the server.
    _stdin: ChildStdin,
    _child: Child,
    dir: TempDir,
}

/// The server shared by the tests of one process, started at the first call; None (after a
/// notice on stderr) when PostgreSQL is not installed or does not start.
pub fn shared_postgres() -> Option<&'static Postgres> {
    static SHARED: OnceLock<Option<Postgres>> = OnceLock::new();
    SHARED
        .get_or_init(|| match Postgres::start() {
            Ok(pg) => Some(pg),
            Err(why) => {
                eprintln!(
                    "NOTICE: no PostgreSQL server for the tests ({why}): its tests are skipped"
                );
                None
            }
        })
        .as_ref()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// The directory of PostgreSQL's server binaries.
fn bin_dir() -> Result<PathBuf, String> {
    if let Some(d) = std::env::var_os("FERRY_TEST_PG_BIN") {
        return Ok(PathBuf::from(d));
    }
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|d| d.join("initdb"))
        .find(|p| p.exists());
    if let Some(initdb) = on_path {
        let real = std::fs::canonicalize(&initdb).unwrap_or(initdb);
        return Ok(real.parent().unwrap_or(Path::new("/")).to_path_buf());
    }
    let mut debian: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|_| "initdb is not on PATH and /usr/lib/postgresql does not exist".to_string())?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|b| b.join("initdb").exists())
        .collect();
    debian.sort();
    debian
        .pop()
        .ok_or_else(|| "no initdb under /usr/lib/postgresql".to_string())
}

/// A command run as the user PostgreSQL accepts: `postgres` when we are root.
fn as_pg_user(program: &Path, root: bool) -> Command {
    if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free port: {e}"))?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

impl Postgres {
    /// initdb, then the server, then waits until it answers.
    pub fn start() -> Result<Postgres, String> {
        let bin = bin_dir()?;
        let root = is_root();
        let dir = tempfile::Builder::new()
            .prefix("ferry-pg-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let pwfile = dir.path().join("pw");
        std::fs::write(&pwfile, PASSWORD).map_err(|e| e.to_string())?;
        if root {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                return Err("cannot give the data directory to the postgres user".into());
            }
        }
        let data = dir.path().join("data");
        let out = as_pg_user(&bin.join("initdb"), root)
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                USER,
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
            ])
            .arg(format!("--pwfile={}", pwfile.display()))
            .args(["-E", "UTF8", "--locale=C.UTF-8", "--no-sync"])
            .output()
            .map_err(|e| format!("initdb: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let port = free_port()?;
        let log = dir.path().join("server.log");
        let script = format!(
            "'{postgres}' -D '{data}' -p {port} -c listen_addresses=127.0.0.1 \
             -c unix_socket_directories='{sock}' -c fsync=off -c synchronous_commit=off \
             -c full_page_writes=off -c max_connections=200 >'{log}' 2>&1 & pid=$!; \
             cat >/dev/null; kill -QUIT $pid 2>/dev/null; wait $pid; rm -rf '{dir}'",
            postgres = bin.join("postgres").display(),
            data = data.display(),
            sock = dir.path().display(),
            log = log.display(),
            dir = dir.path().display(),
        );
        let mut cmd = as_pg_user(Path::new("sh"), root);
        let mut child = cmd
            .args(["-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting postgres: {e}"))?;
        let stdin = child.stdin.take().ok_or("no stdin for the server")?;
        let pg = Postgres {
            port,
            bin,
            _stdin: stdin,
            _child: child,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match pg.psql("postgres", "SELECT 1") {
                Ok(_) => return Ok(pg),
                Err(e) if Instant::now() > deadline => {
                    return Err(format!(
                        "the server did not answer within 60 s: {e}; log: {}",
                        pg.log_tail()
                    ))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    /// The URL of `database`, with the password.
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://{USER}:{PASSWORD}@127.0.0.1:{}/{database}",
            self.port
        )
    }

    /// A new, empty database of its own (a name no other test has).
    pub fn database(&self, hint: &str) -> Result<String, String> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let clean: String = hint
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .take(30)
            .collect::<String>()
            .to_ascii_lowercase();
        let name = format!(
            "t_{clean}_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        self.psql("postgres", &format!("CREATE DATABASE {name}"))?;
        Ok(name)
    }

    /// Runs `sql` in `database` with psql (stops at the first error); its output, unaligned,
    /// without headers.
    pub fn psql(&self, database: &str, sql: &str) -> Result<String, String> {
        let psql = [self.bin.join("psql"), PathBuf::from("/usr/bin/psql")]
            .into_iter()
            .find(|p| p.exists())
            .unwrap_or_else(|| PathBuf::from("psql"));
        let mut child = Command::new(psql)
            .arg(self.url(database))
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("psql: {e}"))?;
        child
            .stdin
            .take()
            .ok_or("no stdin for psql")?
            .write_all(sql.as_bytes())
            .map_err(|e| format!("psql: {e}"))?;
        let out = child.wait_with_output().map_err(|e| format!("psql: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "psql failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// The last lines of the server's log, for diagnostics.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}
