//! Starting S3 servers for the tests: moto (default) or Garage (`FERRY_TEST_GARAGE`).
//!
//! Every server runs under a small `sh` wrapper that reads its stdin until end of file and then
//! kills the server: when the test process ends (even by a panic or a signal), the pipe closes
//! and the server goes away with it; dropping an [`S3Server`] does the same at once.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// Static credentials for a server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Creds {
    pub access_key: String,
    pub secret_key: String,
}

/// Which S3 implementation a server is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerKind {
    Moto,
    Garage,
}

/// A running S3 server on loopback.
pub struct S3Server {
    pub kind: ServerKind,
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
    pub addr: SocketAddr,
    pub creds: Creds,
    /// The region the server answers for (Garage is configured with `us-east-1` too).
    pub region: String,
    guard: ProcessGuard,
    // Holds logs (and Garage's config and data); deleted on drop.
    dir: TempDir,
}

impl S3Server {
    /// The server's log file (stdout and stderr), for diagnostics.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// The last `max` bytes of the server's log.
    pub fn log_tail(&self, max: usize) -> String {
        tail(&self.log_path(), max)
    }

    pub fn is_garage(&self) -> bool {
        self.kind == ServerKind::Garage
    }

    /// Whether the server process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.guard.child.try_wait(), Ok(None))
    }
}

impl std::fmt::Debug for S3Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Server")
            .field("kind", &self.kind)
            .field("endpoint", &self.endpoint)
            .finish()
    }
}

/// The server shared by all tests of this test process (one per test binary). Moto, or Garage
/// when `FERRY_TEST_GARAGE` names a garage binary. Tests must use their own buckets.
pub fn shared_server() -> &'static S3Server {
    static SHARED: OnceLock<S3Server> = OnceLock::new();
    SHARED.get_or_init(start_independent_server)
}

/// A second shared server, distinct from [`shared_server`] (another process, another port),
/// for tests that copy between two endpoints.
pub fn second_server() -> &'static S3Server {
    static SECOND: OnceLock<S3Server> = OnceLock::new();
    SECOND.get_or_init(start_independent_server)
}

/// Start a new server of the configured kind, independent of the shared one (for tests that
/// need two endpoints). It is stopped when dropped.
pub fn start_independent_server() -> S3Server {
    match garage_from_env() {
        Some(garage) => start_garage(&garage),
        None => start_moto(),
    }
}

/// The Garage binary named by `FERRY_TEST_GARAGE`, if any.
pub fn garage_from_env() -> Option<PathBuf> {
    let value = std::env::var_os("FERRY_TEST_GARAGE")?;
    if value.is_empty() {
        return None;
    }
    let path = PathBuf::from(value);
    assert!(
        path.is_file(),
        "FERRY_TEST_GARAGE={} does not name a garage binary",
        path.display()
    );
    Some(path)
}

/// A Garage binary if one can be found: `FERRY_TEST_GARAGE`, `/opt/garage/bin/garage`, or
/// `garage` on PATH. For tests that run on Garage in addition to the default server.
pub fn find_garage() -> Option<PathBuf> {
    if let Some(p) = garage_from_env() {
        return Some(p);
    }
    let well_known = PathBuf::from("/opt/garage/bin/garage");
    if well_known.is_file() {
        return Some(well_known);
    }
    find_on_path("garage")
}

// ---------------------------------------------------------------------------------------------
// moto

/// `$FERRY_MOTO_SERVER`, else the `.venv/` that `tests/run.sh` installs (a known moto 5),
/// else `moto_server` on PATH. The venv comes before PATH: moto 5.2.1 (which some machines
/// carry) answers CompleteMultipartUpload with a root element the AWS SDK refuses.
fn find_moto() -> PathBuf {
    if let Some(p) = std::env::var_os("FERRY_MOTO_SERVER") {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "FERRY_MOTO_SERVER={} does not exist",
            p.display()
        );
        return p;
    }
    let venv = crate::ferry::workspace_root().join(".venv/bin/moto_server");
    if venv.is_file() {
        return venv;
    }
    if let Some(p) = find_on_path("moto_server") {
        return p;
    }
    panic!(
        "moto_server not found (looked at $FERRY_MOTO_SERVER, {} and PATH). \
         Run the end-to-end tests with `tests/run.sh`, which installs moto into .venv/, \
         or set FERRY_MOTO_SERVER to a moto_server executable.",
        venv.display()
    )
}

fn start_moto() -> S3Server {
    start_moto_with(false)
}

/// A moto server that checks credentials: moto's IAM authentication from the first request
/// on (`INITIAL_NO_AUTH_ACTION_COUNT=0`). No IAM user exists, so every key is refused with
/// 403 `InvalidAccessKeyId`: for tests of wrong credentials without Garage.
pub fn start_moto_checking_credentials() -> S3Server {
    start_moto_with(true)
}

fn start_moto_with(check_credentials: bool) -> S3Server {
    let moto = find_moto();
    let creds = Creds {
        access_key: "ferrytestkey".into(),
        secret_key: "ferrytestsecretkey".into(),
    };
    let mut last_error = String::new();
    for _attempt in 0..3 {
        let dir = server_dir("ferry-moto-");
        let port = free_port();
        let mut cmd = Command::new(&moto);
        cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
        // moto checks nothing by default; keep its behaviour predictable.
        if check_credentials {
            cmd.env("INITIAL_NO_AUTH_ACTION_COUNT", "0");
        } else {
            cmd.env_remove("INITIAL_NO_AUTH_ACTION_COUNT");
        }
        let guard = ProcessGuard::spawn(cmd, &dir.path().join("server.log"));
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut server = S3Server {
            kind: ServerKind::Moto,
            endpoint: format!("http://{addr}"),
            addr,
            creds: creds.clone(),
            region: "us-east-1".into(),
            guard,
            dir,
        };
        match wait_for_http(&mut server, Duration::from_secs(60)) {
            Ok(()) => return server,
            Err(e) => last_error = format!("{e}\n--- moto log ---\n{}", server.log_tail(4000)),
        }
    }
    panic!(
        "moto_server ({}) did not start: {last_error}",
        moto.display()
    )
}

// ---------------------------------------------------------------------------------------------
// Garage

/// Start a single-node Garage server (`garage server --single-node --default-bucket`) with a
/// generated configuration in a temporary directory. Buckets are created with the default key,
/// which Garage allows to create buckets.
pub fn start_garage(garage: &Path) -> S3Server {
    let mut last_error = String::new();
    for _attempt in 0..3 {
        let dir = server_dir("ferry-garage-");
        let s3_port = free_port();
        let rpc_port = free_port();
        let creds = Creds {
            access_key: format!("GK{}", hex::encode(random_bytes(12))),
            secret_key: hex::encode(random_bytes(32)),
        };
        let config = format!(
            r#"metadata_dir = "{dir}/meta"
data_dir = "{dir}/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:{rpc_port}"
rpc_public_addr = "127.0.0.1:{rpc_port}"
rpc_secret = "{rpc_secret}"

[s3_api]
s3_region = "us-east-1"
api_bind_addr = "127.0.0.1:{s3_port}"
"#,
            dir = dir.path().display(),
            rpc_secret = hex::encode(random_bytes(32)),
        );
        let config_path = dir.path().join("garage.toml");
        std::fs::write(&config_path, config).expect("write garage.toml");
        let mut cmd = Command::new(garage);
        cmd.arg("-c")
            .arg(&config_path)
            .args(["server", "--single-node", "--default-bucket"]);
        cmd.env("GARAGE_DEFAULT_ACCESS_KEY", &creds.access_key)
            .env("GARAGE_DEFAULT_SECRET_KEY", &creds.secret_key)
            .env("GARAGE_DEFAULT_BUCKET", "ferry-default")
            .env(
                "RUST_LOG",
                std::env::var("FERRY_GARAGE_LOG").unwrap_or_else(|_| "garage=warn".into()),
            );
        let guard = ProcessGuard::spawn(cmd, &dir.path().join("server.log"));
        let addr: SocketAddr = format!("127.0.0.1:{s3_port}").parse().unwrap();
        let mut server = S3Server {
            kind: ServerKind::Garage,
            endpoint: format!("http://{addr}"),
            addr,
            creds,
            region: "us-east-1".into(),
            guard,
            dir,
        };
        match wait_for_http(&mut server, Duration::from_secs(60))
            .and_then(|()| wait_for_garage_ready(&server))
        {
            Ok(()) => return server,
            Err(e) => last_error = format!("{e}\n--- garage log ---\n{}", server.log_tail(4000)),
        }
    }
    panic!("garage ({}) did not start: {last_error}", garage.display())
}

/// Garage answers HTTP before its layout and default key are in place; wait until a signed
/// request with the default key succeeds (a ListObjectsV2 on the default bucket).
fn wait_for_garage_ready(server: &S3Server) -> Result<(), String> {
    let endpoint = server.endpoint.clone();
    let creds = server.creds.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let s3 = crate::s3::S3::new(&endpoint, &creds);
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                match s3
                    .client
                    .list_objects_v2()
                    .bucket("ferry-default")
                    .max_keys(1)
                    .send()
                    .await
                {
                    Ok(_) => return Ok(()),
                    Err(e) if Instant::now() < deadline => {
                        let _ = e;
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    Err(e) => return Err(format!("garage never accepted the default key: {e:?}")),
                }
            }
        })
    })
    .join()
    .expect("garage readiness thread panicked")
}

// ---------------------------------------------------------------------------------------------
// processes

/// A server process under a `sh` wrapper that kills it when its stdin reaches end of file.
struct ProcessGuard {
    child: Child,
    stdin: Option<ChildStdin>,
}

const WRAPPER: &str = r#"
"$@" </dev/null &
pid=$!
# Our stdin is a pipe from the test process: it reaches end of file when the test process
# exits (however it exits) or drops the guard. Then stop the server.
cat >/dev/null
kill "$pid" 2>/dev/null
i=0
while kill -0 "$pid" 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
kill -9 "$pid" 2>/dev/null
wait "$pid" 2>/dev/null
exit 0
"#;

impl ProcessGuard {
    fn spawn(cmd: Command, log: &Path) -> ProcessGuard {
        let log_file = std::fs::File::create(log).expect("create server log");
        let mut wrapper = Command::new("sh");
        wrapper
            .arg("-c")
            .arg(WRAPPER)
            .arg("ferry-test-server")
            .arg(cmd.get_program())
            .args(cmd.get_args());
        for (k, v) in cmd.get_envs() {
            match v {
                Some(v) => wrapper.env(k, v),
                None => wrapper.env_remove(k),
            };
        }
        wrapper
            .stdin(Stdio::piped())
            .stdout(log_file.try_clone().expect("dup log"))
            .stderr(log_file);
        let mut child = wrapper
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {:?}: {e}", cmd.get_program()));
        let stdin = child.stdin.take();
        ProcessGuard { child, stdin }
    }
}

impl Drop for ProcessGuard {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Wait until the server answers an HTTP request (any status).
fn wait_for_http(server: &mut S3Server, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        if !server.is_running() {
            return Err("the server process exited".into());
        }
        if let Ok(mut stream) = TcpStream::connect_timeout(&server.addr, Duration::from_millis(500))
        {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let request = format!(
                "GET / HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
                server.addr
            );
            if stream.write_all(request.as_bytes()).is_ok() {
                let mut buf = [0u8; 12];
                let mut got = 0;
                while got < buf.len() {
                    match stream.read(&mut buf[got..]) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => got += n,
                    }
                }
                if got >= 5 && &buf[..5] == b"HTTP/" {
                    return Ok(());
                }
            }
        }
        if Instant::now() > deadline {
            return Err(format!(
                "no HTTP answer on {} after {timeout:?}",
                server.addr
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A temporary directory for a server's log (and Garage's configuration and data).
fn server_dir(prefix: &str) -> TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("temp dir")
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().unwrap().port()
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn random_bytes(n: usize) -> Vec<u8> {
    (0..n).map(|_| rand::random::<u8>()).collect()
}

fn tail(path: &Path, max: usize) -> String {
    let data = std::fs::read(path).unwrap_or_default();
    let start = data.len().saturating_sub(max);
    String::from_utf8_lossy(&data[start..]).into_owned()
}
