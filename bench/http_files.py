#!/usr/bin/env python3
"""A static file server for W6 when nginx is not installed (and for --smoke).

Serves a directory over HTTP/1.1 on 127.0.0.1 with keep-alive, Content-Length, Last-Modified,
a strong ETag, single `Range` requests (206) and `If-Match` (412 when the ETag differs): what
Ferry's URL-list source uses. One thread per connection. It is much slower than nginx on many
small files (Python), so the benchmark prefers nginx for timed runs and says which it used.

    http_files.py ROOT PORT
"""

import email.utils
import os
import re
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    root = "."

    def log_message(self, *a):  # quiet: 20,000 lines per run otherwise
        pass

    def _file(self):
        path = unquote(urlsplit(self.path).path)
        # the served folders are symlinks to the data sets: no realpath containment, but no
        # '..' either
        if ".." in path.split("/"):
            return None, None
        full = os.path.join(self.root, path.lstrip("/"))
        if not os.path.isfile(full):
            return None, None
        return full, os.stat(full)

    def _send_empty(self, code):
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_HEAD(self):
        self.do_GET(body=False)

    def do_GET(self, body=True):
        full, st = self._file()
        if full is None:
            return self._send_empty(404)
        etag = f'"{st.st_mtime_ns:x}-{st.st_size:x}"'
        im = self.headers.get("If-Match")
        if im and im.strip() != "*" and etag not in [t.strip() for t in im.split(",")]:
            return self._send_empty(412)
        start, end, code = 0, st.st_size - 1, 200
        rng = self.headers.get("Range")
        m = RANGE.match(rng.strip()) if rng else None
        if m and (m.group(1) or m.group(2)):
            if m.group(1):
                start = int(m.group(1))
                if m.group(2):
                    end = min(int(m.group(2)), st.st_size - 1)
            else:
                start = max(st.st_size - int(m.group(2)), 0)
            if start > end or start >= st.st_size:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{st.st_size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            code = 206
        n = end - start + 1
        self.send_response(code)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(n))
        self.send_header("ETag", etag)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Last-Modified", email.utils.formatdate(st.st_mtime, usegmt=True))
        if code == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{st.st_size}")
        self.end_headers()
        if not body:
            return
        with open(full, "rb") as f:
            f.seek(start)
            left = n
            while left:
                chunk = f.read(min(left, 1 << 20))
                if not chunk:
                    break
                self.wfile.write(chunk)
                left -= len(chunk)


def main():
    root, port = sys.argv[1], int(sys.argv[2])
    Handler.root = root
    srv = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    srv.daemon_threads = True
    srv.request_queue_size = 1024
    srv.serve_forever()


if __name__ == "__main__":
    main()
