#!/usr/bin/env python3
"""W7's reference peer: images out of database rows the way such migrations are usually written.

A loop that pages through the table with LIMIT/OFFSET, decodes each row's base64 and uploads it
with boto3 `put_object` (its content type from the row's mime_type column) from a thread pool,
one page at a time. This file is that script, kept plain on purpose: it is what Ferry is
compared with, not a tuned tool.

    w7_script.py --db postgres://user:pw@host:port/db | sqlite:///path/app.db
                 --endpoint URL --bucket B [--page 500] [--threads 32]

Table `images(id, image_data, mime_type)`; the key is images/{id:012}.{ext}, as Ferry's job
writes it. Credentials for S3 from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_REGION.
"""

import argparse
import base64
import concurrent.futures as cf
import sys
import time

import boto3
from botocore.config import Config

EXT = {"image/png": "png", "image/jpeg": "jpg", "image/gif": "gif", "image/webp": "webp"}


def connect(url):
    if url.startswith("sqlite://"):
        import sqlite3
        return sqlite3.connect(url[len("sqlite://"):], check_same_thread=False), "?"
    import psycopg
    return psycopg.connect(url), "%s"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", required=True)
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--bucket", required=True)
    ap.add_argument("--page", type=int, default=500)
    ap.add_argument("--threads", type=int, default=32)
    a = ap.parse_args()

    s3 = boto3.client("s3", endpoint_url=a.endpoint,
                      config=Config(s3={"addressing_style": "path"},
                                    max_pool_connections=a.threads,
                                    retries={"max_attempts": 5, "mode": "standard"}))
    conn, ph = connect(a.db)
    failed = 0

    def upload(row):
        rid, data, mime = row
        body = base64.b64decode(data)
        key = f"images/{rid:012d}.{EXT.get(mime, 'bin')}"
        s3.put_object(Bucket=a.bucket, Key=key, Body=body, ContentType=mime)

    t0 = time.monotonic()
    offset, done = 0, 0
    with cf.ThreadPoolExecutor(max_workers=a.threads) as pool:
        while True:
            cur = conn.cursor()
            cur.execute(f"SELECT id, image_data, mime_type FROM images ORDER BY id "
                        f"LIMIT {ph} OFFSET {ph}", (a.page, offset))
            rows = cur.fetchall()
            cur.close()
            if not rows:
                break
            for f in [pool.submit(upload, r) for r in rows]:
                try:
                    f.result()
                except Exception as e:  # noqa: BLE001 - counted, as such scripts do
                    failed += 1
                    print(f"failed: {e}", file=sys.stderr)
            offset += len(rows)
            done += len(rows)
            if done % 5000 < a.page:
                rate = done / max(time.monotonic() - t0, 1e-6)
                print(f"{done} rows, {rate:.0f}/s", file=sys.stderr, flush=True)
    print(f"{done} rows, {failed} failed in {time.monotonic() - t0:.1f} s", file=sys.stderr)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
