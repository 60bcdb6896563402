#!/usr/bin/env python3
"""W6's reference peer: the CDN migration of issue 14 as it was written, faithfully.

That job moved 4 million images off CloudFront into S3 with "150 workers": a Python script, a
ThreadPoolExecutor of 150 threads, each URL fetched with `requests` (a Session per thread,
streamed) and uploaded with boto3's `upload_fileobj`, a Content-Length check, a completed list
and a failed list, and an ETA on stderr. This file is that script, kept plain on purpose: it is
what Ferry is compared with, not a tuned tool.

    w6_script.py --list urls.tsv --endpoint URL --bucket B [--threads 150] [--state-dir D]

The list is Storage Transfer's TSV (TsvHttpData-1.0: URL, size, base64 MD5); the key is the
URL's path without its leading '/'. Credentials come from AWS_ACCESS_KEY_ID /
AWS_SECRET_ACCESS_KEY / AWS_REGION. Exit status 1 when any URL failed.
"""

import argparse
import concurrent.futures as cf
import sys
import threading
import time
from pathlib import Path
from urllib.parse import unquote, urlsplit

import boto3
import requests
from botocore.config import Config


class Counting:
    """A file-like view of the response body that counts what boto3 reads from it."""

    def __init__(self, raw):
        self.raw, self.n = raw, 0

    def read(self, size=-1):
        b = self.raw.read(size)
        self.n += len(b)
        return b


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--list", required=True)
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--bucket", required=True)
    ap.add_argument("--threads", type=int, default=150)
    ap.add_argument("--state-dir", default=".")
    a = ap.parse_args()

    rows = []
    with open(a.list) as f:
        for line in f:
            line = line.rstrip("\n")
            if not line or line.startswith("TsvHttpData"):
                continue
            parts = line.split("\t")
            rows.append((parts[0], int(parts[1]) if len(parts) > 1 and parts[1] else None))

    s3 = boto3.client("s3", endpoint_url=a.endpoint,
                      config=Config(s3={"addressing_style": "path"},
                                    max_pool_connections=a.threads,
                                    retries={"max_attempts": 5, "mode": "standard"}))
    local = threading.local()
    state = Path(a.state_dir)
    state.mkdir(parents=True, exist_ok=True)
    done_f = open(state / "completed.txt", "a")
    fail_f = open(state / "failed.txt", "a")
    lock = threading.Lock()
    counts = {"ok": 0, "failed": 0, "bytes": 0}

    def session():
        if not hasattr(local, "s"):
            local.s = requests.Session()
            adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=4,
                                                    max_retries=3)
            local.s.mount("http://", adapter)
            local.s.mount("https://", adapter)
        return local.s

    def copy(row):
        url, size = row
        key = unquote(urlsplit(url).path).lstrip("/")
        try:
            with session().get(url, stream=True, timeout=60) as r:
                r.raise_for_status()
                length = int(r.headers["Content-Length"])
                if size is not None and length != size:
                    raise ValueError(f"Content-Length {length} != listed size {size}")
                body = Counting(r.raw)
                s3.upload_fileobj(body, a.bucket, key, ExtraArgs={
                    "ContentType": r.headers.get("Content-Type", "application/octet-stream")})
                if body.n != length:
                    raise ValueError(f"body of {body.n} bytes, Content-Length {length}")
            with lock:
                counts["ok"] += 1
                counts["bytes"] += length
                done_f.write(url + "\n")
        except Exception as e:  # noqa: BLE001 - recorded in the failed list, as the job did
            with lock:
                counts["failed"] += 1
                fail_f.write(f"{url}\t{e}\n")

    t0 = time.monotonic()
    stop = threading.Event()

    def eta():
        while not stop.wait(5):
            n = counts["ok"] + counts["failed"]
            rate = n / max(time.monotonic() - t0, 1e-6)
            left = (len(rows) - n) / rate if rate else float("inf")
            print(f"{n}/{len(rows)} done, {counts['failed']} failed, {rate:.0f}/s, "
                  f"ETA {left:.0f} s", file=sys.stderr, flush=True)

    threading.Thread(target=eta, daemon=True).start()
    with cf.ThreadPoolExecutor(max_workers=a.threads) as pool:
        list(pool.map(copy, rows))
    stop.set()
    done_f.close()
    fail_f.close()
    print(f"{counts['ok']} copied ({counts['bytes']} bytes), {counts['failed']} failed in "
          f"{time.monotonic() - t0:.1f} s", file=sys.stderr)
    sys.exit(1 if counts["failed"] else 0)


if __name__ == "__main__":
    main()
