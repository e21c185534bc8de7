"""A static HTTP/1.1 file server with Range support, counters and injectable faults.

Medallion reads Parquet and Delta tables over HTTP with range requests. Its tests and
benchmarks need a server that behaves like object storage or a CDN (keep-alive, strong
ETags, 206/416 answers, CORS for browsers), that counts what a reader asked for (so tests can
assert "the footer was read with one request", benchmarks can report bytes fetched), and
that can misbehave on demand (so the client's retries, validation and error messages can be
tested against a real socket instead of a mock).

Usage:
  python3 tests/rangeserve.py ROOT [--port 0] [--latency-ms N] [--fault MODE]
                              [--port-file PATH] [--no-store]
  python3 tests/rangeserve.py --self-test

Control endpoints (never counted, never delayed, never faulted):
  GET /__stats             {"requests", "bytes", "heads", "log": [[method, path, range|null,
                           status|null, body_bytes], ...]}; status is null for a dropped request
  GET /__stats?reset=1     the same, then zeroes the counters
  GET /__fault?mode=MODE   switches the fault mode at run time (and restarts its odd/even count)

Fault modes: none, ignore-range (200 with the whole body), status-500, flaky (odd requests
503, even ones succeed), drop (odd requests: close without answering), truncate (full
Content-Length, half the body, close), slow (30 s before answering), etag-flip (a new ETag on
every response), 404, catch-all (a path that names no file gets 200 and an HTML page, as a
single-page app's host answers). "Odd" counts the requests served since the mode was set, from 1, so a
client that retries once always gets through `flaky` and `drop`.

Range handling is deliberately strict, to catch client bugs: a `bytes=` range that is
malformed, has more than one range, or has last < first gets 416, like an unsatisfiable one.
Ranges in other units are ignored (200), as RFC 9110 requires.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from http.client import HTTPConnection, IncompleteRead
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

FAULT_MODES = (
    "none", "ignore-range", "status-500", "flaky", "drop", "truncate", "slow", "etag-flip", "404",
    "catch-all",
)
CATCH_ALL_PAGE = b"<!doctype html><title>app</title><div id=root></div>\n"
SLOW_SECONDS = 30
CHUNK = 1 << 20
RANGE_RE = re.compile(r"bytes=(\d*)-(\d*)", re.IGNORECASE)

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css",
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".json": "application/json",
    ".wasm": "application/wasm",
    ".csv": "text/csv",
}


class Unsatisfiable(Exception):
    """The Range header cannot be answered with one byte range of this file."""


def parse_range(header, size):
    """(first, last) inclusive for a Range header, None to serve the whole file.

    Raises Unsatisfiable for a `bytes=` range this server will not answer (see the module doc).
    """
    if header is None or not header.strip().lower().startswith("bytes="):
        return None
    m = RANGE_RE.fullmatch(header.strip())
    if not m or m.groups() == ("", ""):
        raise Unsatisfiable
    first, last = m.groups()
    if first == "":
        n = int(last)
        if n == 0 or size == 0:
            raise Unsatisfiable
        return max(0, size - n), size - 1
    first = int(first)
    last = size - 1 if last == "" else int(last)
    if last < first or first >= size:
        raise Unsatisfiable
    return first, min(last, size - 1)


class State:
    """Counters and the fault mode, shared by every handler thread."""

    def __init__(self, fault):
        self.lock = threading.Lock()
        # A request is logged after its answer is sent, so a client may ask for the stats
        # before its own last request is in them; the stats wait for requests in flight.
        self.settled = threading.Condition(self.lock)
        self.inflight = 0
        self.etag_flips = 0  # never reset, so a flipped ETag is never seen twice
        self.reset_stats()
        self.set_fault(fault)

    def reset_stats(self):
        self.requests, self.bytes, self.heads, self.log = 0, 0, 0, []

    def set_fault(self, mode):
        self.fault, self.fault_count = mode, 0

    def snapshot(self, reset):
        with self.lock:
            self.settled.wait_for(lambda: self.inflight == 0, timeout=2.0)
            out = {"requests": self.requests, "bytes": self.bytes, "heads": self.heads,
                   "log": list(self.log)}
            if reset:
                self.reset_stats()
            return out

    def admit(self, method):
        """Count a served request; returns (fault mode, its 1-based number under that mode)."""
        with self.lock:
            self.inflight += 1
            self.requests += 1
            self.heads += method == "HEAD"
            self.fault_count += 1
            return self.fault, self.fault_count

    def record(self, method, path, rng, status, body_bytes):
        with self.lock:
            self.bytes += body_bytes
            self.log.append([method, path, rng, status, body_bytes])
            self.inflight -= 1
            self.settled.notify_all()

    def next_flip(self):
        with self.lock:
            self.etag_flips += 1
            return self.etag_flips


class Server(ThreadingHTTPServer):
    """Serves ROOT on 127.0.0.1, one thread per connection."""

    daemon_threads = True

    def __init__(self, root, port, latency, fault, cache_control=None):
        super().__init__(("127.0.0.1", port), Handler)
        self.root, self.latency = os.path.realpath(root), latency
        self.cache_control = cache_control
        self.state = State(fault)

    def handle_error(self, request, client_address):
        """Clients hanging up mid-answer is routine here (and provoked by `drop`): stay quiet."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "rangeserve/1"

    def log_message(self, *args):
        pass

    def do_OPTIONS(self):
        self.serve_counted(lambda: self.respond(204, b""))

    def do_HEAD(self):
        self.serve_counted(self.serve_file)

    def do_GET(self):
        route = urlsplit(self.path).path
        if route == "/__stats":
            self.control_stats()
        elif route == "/__fault":
            self.control_fault()
        else:
            self.serve_counted(self.serve_file)

    # control endpoints

    def query(self):
        return {k: v[-1] for k, v in parse_qs(urlsplit(self.path).query).items()}

    def control_stats(self):
        snap = self.server.state.snapshot(reset=self.query().get("reset") == "1")
        self.respond(200, json.dumps(snap).encode(), {"Content-Type": "application/json"})

    def control_fault(self):
        mode = self.query().get("mode")
        state = self.server.state
        if mode is not None and mode not in FAULT_MODES:
            body = f"unknown fault mode {mode!r}; one of {', '.join(FAULT_MODES)}\n"
            return self.respond(400, body.encode(), {"Content-Type": "text/plain"})
        if mode is not None:
            with state.lock:
                state.set_fault(mode)
        body = json.dumps({"mode": state.fault}).encode()
        self.respond(200, body, {"Content-Type": "application/json"})

    # counted requests

    def serve_counted(self, serve):
        """Count, delay and maybe sabotage a request, then answer it with `serve`."""
        self.status, self.sent = None, 0
        mode, n = self.server.state.admit(self.command)
        if self.server.latency:
            time.sleep(self.server.latency)
        try:
            if not self.apply_fault(mode, n):
                serve()
        finally:
            self.server.state.record(self.command, self.path, self.headers.get("Range"),
                                     self.status, self.sent)

    def apply_fault(self, mode, n):
        """Answer the request the faulty way if `mode` says so; True when it is answered."""
        odd = n % 2 == 1
        if mode == "slow":
            time.sleep(SLOW_SECONDS)
            return False
        if mode == "status-500":
            self.respond_text(500, "injected fault: status-500\n")
        elif mode == "flaky" and odd:
            self.respond_text(503, "injected fault: flaky\n")
        elif mode == "404":
            self.respond_text(404, "injected fault: 404\n")
        elif mode == "drop" and odd:
            self.close_connection = True
        else:
            return False
        return True

    def serve_file(self):
        path = self.resolve()
        if path is None and self.fault_is("catch-all"):
            return self.respond(200, CATCH_ALL_PAGE, {"Content-Type": CONTENT_TYPES[".html"]})
        if path is None:
            return self.respond_text(404, "not found\n")
        st = os.stat(path)
        size = st.st_size
        headers = {"Accept-Ranges": "bytes", "ETag": self.etag(st),
                   "Content-Type": CONTENT_TYPES.get(os.path.splitext(path)[1],
                                                     "application/octet-stream")}
        try:
            span = None if self.fault_is("ignore-range") else parse_range(
                self.headers.get("Range"), size)
        except Unsatisfiable:
            headers["Content-Range"] = f"bytes */{size}"
            return self.respond(416, b"", headers)
        first, last, status = 0, size - 1, 200
        if span is not None:
            (first, last), status = span, 206
            headers["Content-Range"] = f"bytes {first}-{last}/{size}"
        self.send_file(path, status, first, last - first + 1, headers)

    def resolve(self):
        """The file a URL path names under the root, or None (outside the root, not a file).

        A path ending in `/` names the folder's index.html, so `/web/` opens the dashboard.
        """
        root = self.server.root
        rel = unquote(urlsplit(self.path).path).lstrip("/")
        if rel == "" or rel.endswith("/"):
            rel += "index.html"
        path = os.path.realpath(os.path.join(root, rel))
        inside = path == root or path.startswith(root + os.sep)
        return path if inside and os.path.isfile(path) else None

    def etag(self, st):
        tag = f"{st.st_size:x}-{st.st_mtime_ns:x}"
        if self.fault_is("etag-flip"):
            tag += f"-{self.server.state.next_flip()}"
        return f'"{tag}"'

    def fault_is(self, mode):
        return self.server.state.fault == mode

    # writing responses

    def start(self, status, length, headers):
        self.status = status
        self.send_response(status)
        self.send_header("Access-Control-Allow-Origin", "*")
        self.send_header("Access-Control-Allow-Headers", "Range, If-None-Match, If-Match")
        self.send_header("Access-Control-Allow-Methods", "GET, HEAD, OPTIONS")
        self.send_header("Access-Control-Expose-Headers",
                         "Content-Range, Content-Length, ETag, Accept-Ranges")
        if self.server.cache_control:
            self.send_header("Cache-Control", self.server.cache_control)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(length))
        self.end_headers()

    def respond(self, status, body, headers=None):
        self.start(status, len(body), headers or {})
        if self.command != "HEAD" and body:
            self.wfile.write(body)
            self.sent = len(body)

    def respond_text(self, status, text):
        self.respond(status, text.encode(), {"Content-Type": "text/plain"})

    def send_file(self, path, status, offset, length, headers):
        self.start(status, length, headers)
        if self.command == "HEAD":
            return
        budget = length
        if self.fault_is("truncate"):
            budget, self.close_connection = length // 2, True
        with open(path, "rb") as f:
            f.seek(offset)
            while budget > 0:
                chunk = f.read(min(CHUNK, budget))
                if not chunk:
                    break
                self.wfile.write(chunk)
                self.sent += len(chunk)
                budget -= len(chunk)


def write_port_file(path, port):
    """Write atomically, so a reader polling for the file never sees it half written."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(f"{port}\n")
    os.replace(tmp, path)


def serve(args):
    cache_control = args.cache_control or ("no-store" if args.no_store else None)
    server = Server(args.root, args.port, args.latency_ms / 1000, args.fault, cache_control)
    port = server.server_address[1]
    if args.port_file:
        write_port_file(args.port_file, port)
    print(f"listening on http://127.0.0.1:{port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


# self-test: runs this file as a server process and checks it through urllib and http.client


def fetch(url, headers=None, method="GET"):
    """(status, headers, body) without raising on 4xx/5xx."""
    req = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def check_ranges(base, data):
    status, h, body = fetch(f"{base}/f.bin")
    assert (status, body, h["Accept-Ranges"]) == (200, data, "bytes"), status
    assert h["ETag"].startswith('"') and h["Access-Control-Allow-Origin"] == "*"
    for rng, want, content_range in [
        ("bytes=10-19", data[10:20], "bytes 10-19/1000"),
        ("bytes=990-", data[990:], "bytes 990-999/1000"),
        ("bytes=-5", data[-5:], "bytes 995-999/1000"),
        ("bytes=-5000", data, "bytes 0-999/1000"),
        ("bytes=995-2000", data[995:], "bytes 995-999/1000"),
    ]:
        status, h, body = fetch(f"{base}/f.bin", {"Range": rng})
        assert (status, body, h["Content-Range"]) == (206, want, content_range), rng
    for rng in ["bytes=1000-", "bytes=-0", "bytes=5-4", "bytes=0-1,3-4"]:
        status, h, _ = fetch(f"{base}/f.bin", {"Range": rng})
        assert (status, h["Content-Range"]) == (416, "bytes */1000"), rng
    status, h, body = fetch(f"{base}/f.bin", method="HEAD")
    assert (status, h["Content-Length"], body) == (200, "1000", b"")
    assert fetch(f"{base}/missing.bin")[0] == 404
    assert fetch(f"{base}/../etc/passwd")[0] == 404
    assert fetch(f"{base}/f.bin", method="OPTIONS")[0] == 204


def check_stats(base):
    stats = json.loads(fetch(f"{base}/__stats?reset=1")[2])
    assert (stats["requests"], stats["heads"]) == (14, 1), stats
    assert stats["bytes"] == 1000 + 10 + 10 + 5 + 1000 + 5 + len(b"not found\n") * 2, stats
    assert stats["log"][1] == ["GET", "/f.bin", "bytes=10-19", 206, 10], stats["log"][1]
    assert json.loads(fetch(f"{base}/__stats")[2])["requests"] == 0


def check_keep_alive(port):
    conn = HTTPConnection("127.0.0.1", port, timeout=10)
    for _ in range(3):
        conn.request("GET", "/f.bin", headers={"Range": "bytes=0-0"})
        assert conn.getresponse().read() == b"\x00"
    conn.close()


def check_faults(base, port):
    def set_fault(mode):
        assert fetch(f"{base}/__fault?mode={mode}")[0] == 200

    set_fault("flaky")
    assert [fetch(f"{base}/f.bin")[0] for _ in range(4)] == [503, 200, 503, 200]
    set_fault("ignore-range")
    status, h, body = fetch(f"{base}/f.bin", {"Range": "bytes=0-9"})
    assert (status, len(body), h["Content-Range"]) == (200, 1000, None)
    set_fault("etag-flip")
    assert fetch(f"{base}/f.bin")[1]["ETag"] != fetch(f"{base}/f.bin")[1]["ETag"]
    set_fault("truncate")
    conn = HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/f.bin")
    resp = conn.getresponse()
    assert resp.getheader("Content-Length") == "1000"
    try:
        resp.read()
        raise AssertionError("truncate mode sent the whole body")
    except IncompleteRead as e:
        assert len(e.partial) == 500, len(e.partial)
    set_fault("drop")
    try:
        fetch(f"{base}/f.bin")
        raise AssertionError("drop mode answered")
    except (urllib.error.URLError, ConnectionError, OSError):
        pass
    assert fetch(f"{base}/f.bin")[0] == 200
    assert fetch(f"{base}/__fault?mode=bogus")[0] == 400
    set_fault("none")


def self_test():
    root = tempfile.mkdtemp(prefix="rangeserve-")
    data = bytes(range(256)) * 3 + bytes(232)
    with open(os.path.join(root, "f.bin"), "wb") as f:
        f.write(data)
    proc = subprocess.Popen([sys.executable, __file__, root, "--port", "0"],
                            stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("listening on http://127.0.0.1:"), line
        port = int(line.rsplit(":", 1)[1])
        base = f"http://127.0.0.1:{port}"
        check_ranges(base, data)
        check_stats(base)
        check_keep_alive(port)
        check_faults(base, port)
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(root)
    print("rangeserve self-test ok")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("root", nargs="?", help="the folder to serve")
    ap.add_argument("--port", type=int, default=0, help="0 picks a free port (default)")
    ap.add_argument("--latency-ms", type=float, default=0,
                    help="sleep this long before answering each counted request")
    ap.add_argument("--fault", choices=FAULT_MODES, default="none")
    ap.add_argument("--port-file", help="also write the port to this file")
    ap.add_argument("--no-store", action="store_true",
                    help="send Cache-Control: no-store, so browser caches never answer or split "
                         "a range request")
    ap.add_argument("--cache-control", metavar="VALUE",
                    help="send this Cache-Control on every answer (e.g. max-age=300: a "
                         "freshness lifetime caches may answer from without asking)")
    ap.add_argument("--self-test", action="store_true", help="check this server and exit")
    args = ap.parse_args()
    if args.self_test:
        return self_test()
    if args.root is None:
        ap.error("ROOT is required")
    serve(args)


if __name__ == "__main__":
    main()
