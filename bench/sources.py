"""The sources of W6 and W7 that are not buckets: an HTTP file server (W6) and a PostgreSQL
server and SQLite file holding base64 images (W7), with their data sets. Used by bench.py."""

from __future__ import annotations

import base64
import hashlib
import os
import random
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    """A free loopback port (not Garage's defaults, 3900-3903)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if not 3900 <= port <= 3903:
            return port


def stop_process(proc):
    """SIGTERM, then SIGKILL after 10 s, for a server this script started."""
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_port(port, proc=None, timeout=30.0):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"port {port} did not open in {timeout}s")


# --------------------------------------------------------------------------------------
# W6: static files over HTTP on loopback
# --------------------------------------------------------------------------------------


def nginx_binary():
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None)


class HttpFiles:
    """Serves `root` on 127.0.0.1: nginx (2 workers, sendfile, keep-alive, no access log;
    Range, ETag and If-Match are nginx's own) or bench/http_files.py (Python, a thread per
    connection). `kind` says which, for the report."""

    def __init__(self, root: Path, work: Path, prefer_nginx: bool):
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        nginx = nginx_binary() if prefer_nginx else None
        if nginx:
            prefix = work / "nginx"
            prefix.mkdir(parents=True, exist_ok=True)
            user = "user root;" if os.geteuid() == 0 else ""  # the data lives under ~/.cache
            conf = prefix / "nginx.conf"
            conf.write_text(f"""
{user}
daemon off;
worker_processes 2;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_requests 1000000;
    keepalive_timeout 120s;
    default_type application/octet-stream;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    server {{
        listen 127.0.0.1:{self.port} backlog=4096;
        root {root};
        location / {{ }}
    }}
}}
""")
            self.kind = subprocess.run([nginx, "-v"], capture_output=True,
                                       text=True).stderr.strip().replace("nginx version: ", "")
            cmd = [nginx, "-p", str(prefix), "-c", str(conf)]
        else:
            self.kind = "bench/http_files.py (Python ThreadingHTTPServer)"
            cmd = [sys.executable, str(HERE / "http_files.py"), str(root), str(self.port)]
        self.log = open(work / "http-server.log", "ab")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        wait_port(self.port, self.proc)

    def stop(self):
        stop_process(self.proc)


def write_url_lists(base_url, prefix, expected, work: Path, name):
    """The TSV list (TsvHttpData-1.0: URL, size, base64 MD5) and rclone's CSV (URL,KEY) of the
    files under /prefix/; expected: relative path -> (size, hex MD5). Keys are the URL paths
    without the leading '/', which is Ferry's `keys: Path`. Returns (tsv, csv, expected by key)."""
    tsv, csv = work / f"{name}.tsv", work / f"{name}.csv"
    by_key = {}
    with open(tsv, "w") as t, open(csv, "w") as c:
        t.write("TsvHttpData-1.0\n")
        for rel, (size, md5) in sorted(expected.items()):
            key = f"{prefix}/{rel}"
            url = f"{base_url}/{key}"
            b64 = base64.b64encode(bytes.fromhex(md5)).decode()
            t.write(f"{url}\t{size}\t{b64}\n")
            c.write(f"{url},{key}\n")
            by_key[key] = (size, md5)
    return tsv, csv, by_key


# --------------------------------------------------------------------------------------
# W7: base64 images in database rows
# --------------------------------------------------------------------------------------

W7_SIZE = 64 * 1024
W7_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp")
W7_EXT = {"image/png": "png", "image/jpeg": "jpg", "image/gif": "gif", "image/webp": "webp"}


def w7_row(i):
    """Row i's decoded image (64 KiB: the format's magic numbers, then random bytes) and its
    content type; the same for every run."""
    mime = W7_TYPES[i % 4]
    if mime == "image/png":
        head = b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR"
    elif mime == "image/jpeg":
        head = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01"
    elif mime == "image/gif":
        head = b"GIF89a"
    else:
        head = b"RIFF" + (W7_SIZE - 8).to_bytes(4, "little") + b"WEBPVP8 "
    return head + random.Random(i).randbytes(W7_SIZE - len(head)), mime


def w7_key(i, mime):
    return f"images/{i:012d}.{W7_EXT[mime]}"


def w7_expected(rows):
    """key -> (size, MD5), key -> content type, key -> the writeBack URL, for ids 1..rows."""
    exp, types, urls = {}, {}, {}
    for i in range(1, rows + 1):
        data, mime = w7_row(i)
        k = w7_key(i, mime)
        exp[k] = (len(data), hashlib.md5(data).hexdigest())
        types[k] = mime
        urls[i] = f"https://images.example.com/{k}"
    return exp, types, urls


W7_TABLE = ("CREATE TABLE images (id BIGINT PRIMARY KEY, image_data TEXT NOT NULL, "
            "mime_type TEXT NOT NULL, image_url TEXT)")


def sqlite_table(path: Path, rows, log):
    """The SQLite file of W7 (cached: rebuilt only when missing or incomplete)."""
    import sqlite3
    if path.exists():
        try:
            with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as c:
                if c.execute("SELECT rows FROM bench_meta").fetchone()[0] == rows:
                    return
        except Exception:  # noqa: BLE001 - anything wrong: build it again
            pass
    log(f"W7: writing {rows} rows of base64 images into {path}")
    tmp = path.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    c = sqlite3.connect(tmp)
    c.execute(W7_TABLE.replace("BIGINT PRIMARY KEY", "INTEGER PRIMARY KEY"))
    c.execute("CREATE TABLE bench_meta (rows INTEGER)")

    def gen():
        for i in range(1, rows + 1):
            data, mime = w7_row(i)
            yield i, base64.b64encode(data).decode(), mime

    c.executemany("INSERT INTO images (id, image_data, mime_type) VALUES (?, ?, ?)", gen())
    c.execute("INSERT INTO bench_meta VALUES (?)", (rows,))
    c.commit()
    c.close()
    tmp.rename(path)


def pg_bin_dir(explicit=None):
    if explicit:
        return Path(explicit)
    initdb = shutil.which("initdb")
    if initdb:
        return Path(os.path.realpath(initdb)).parent
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                   key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit()
                   else 0)
    return found[-1].parent if found else None


class Postgres:
    """A PostgreSQL server in `base` (initdb once; the data directory is kept, so the W7
    table is loaded once): loopback TCP, password authentication, fsync off (as the tests).
    As root it runs as the `postgres` user (PostgreSQL refuses root), so `base` must be a
    directory that user can reach (not under /root)."""

    USER = "ferry"

    def __init__(self, bin_dir: Path, base: Path, log):
        self.bin, self.base, self.log = bin_dir, base, log
        self.root = os.geteuid() == 0
        self.data = base / "data"
        base.mkdir(parents=True, exist_ok=True)
        pw_file = base / "password"
        if not pw_file.exists():
            pw_file.write_text(os.urandom(12).hex())
        self.password = pw_file.read_text().strip()
        if self.root:
            subprocess.run(["chown", "-R", "postgres:postgres", str(base)], check=True)
            os.chmod(base, 0o700)
        if not (self.data / "PG_VERSION").exists():
            shutil.rmtree(self.data, ignore_errors=True)
            self._pg("initdb", "-D", str(self.data), "-U", self.USER, "--auth-local=trust",
                     "--auth-host=scram-sha-256", f"--pwfile={pw_file}", "-E", "UTF8",
                     "--locale=C.UTF-8", "--no-sync")
        # a server left running by an interrupted run of the script: stop it first
        self._pg("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop", check=False)
        self.port = free_port()
        opts = (f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={base}"
                f" -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
                f" -c max_connections=200")
        self._pg("pg_ctl", "-D", str(self.data), "-l", str(base / "server.log"), "-o", opts,
                 "-w", "-t", "60", "start")

    def _pg(self, prog, *args, check=True):
        cmd = [str(self.bin / prog), *args]
        if self.root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if check and r.returncode != 0:
            raise RuntimeError(f"{prog} failed: {r.stderr.strip()[-500:]}")
        return r

    def url(self, db="postgres"):
        return f"postgres://{self.USER}:{self.password}@127.0.0.1:{self.port}/{db}"

    def version(self):
        return self._pg("postgres", "--version").stdout.strip()

    def connect(self, db="postgres", autocommit=True):
        import psycopg
        return psycopg.connect(self.url(db), autocommit=autocommit)

    def table(self, db, rows):
        """Database `db` holding W7's table of `rows` rows (loaded once, with COPY)."""
        with self.connect() as c:
            if not c.execute("SELECT 1 FROM pg_database WHERE datname = %s", (db,)).fetchone():
                c.execute(f"CREATE DATABASE {db}")
        with self.connect(db) as c:
            try:
                if c.execute("SELECT rows FROM bench_meta").fetchone()[0] == rows:
                    return
            except Exception:  # noqa: BLE001 - not loaded (or another size): load it again
                pass
        self.log(f"W7: loading {rows} rows of base64 images into PostgreSQL database {db}")
        with self.connect(db, autocommit=False) as c:
            c.execute("DROP TABLE IF EXISTS images")
            c.execute("DROP TABLE IF EXISTS bench_meta")
            c.execute(W7_TABLE)
            c.execute("CREATE TABLE bench_meta (rows INTEGER)")
            with c.cursor().copy("COPY images (id, image_data, mime_type) FROM STDIN") as cp:
                for i in range(1, rows + 1):
                    data, mime = w7_row(i)
                    cp.write_row((i, base64.b64encode(data).decode(), mime))
            c.execute("INSERT INTO bench_meta VALUES (%s)", (rows,))
            c.commit()
        with self.connect(db) as c:
            c.execute("VACUUM ANALYZE images")

    def stop(self):
        self._pg("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop", check=False)
