"""A Medallion lake in an S3 bucket holds what the same lake on disk holds, other readers agree,
and S3's failures (denied, missing bucket, SlowDown, a cut upload, a second writer) leave every
table consistent.

Usage: python3 tests/s3_lake.py MEDALLION_BIN [--scale 0.3] [--keep DIR]

Needs moto[server] and boto3, besides deltalake, pyarrow and DuckDB with its delta and httpfs
extensions. Starts moto's S3 server on a free loopback port (stopped at the end, also on
failure) and hands Medallion its address the way AWS tools take it: AWS_ENDPOINT_URL,
AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION (every other AWS_* variable removed).

  preflight  moto answers a second `PutObject If-None-Match: *` with 412, also in a versioned
             bucket, and honours Range GETs; without that the race below proves nothing, so the
             script stops there.
  demo       `medallion demo` into local lakes (guest and native), into s3://shop/lake (wasm
             guest) and into s3://shop/native (--engine native). Every source record is once
             in bronze or its quarantine (counted here from the files). Every table in the
             bucket (bronze, silver, gold, quarantine) is read by deltalake and by DuckDB
             (httpfs secret + delta_scan) and compared with deltalake's reading of the local
             lake; `medallion query --lake s3://…` counts what deltalake counts, in both
             engines; `medallion inspect` of each gold table lists the versions deltalake sees.
  sources    the demo's source files uploaded to s3://shop/src/; a copy of the spec whose
             bronze paths (files and globs) point there, run into s3://shop/lake2: same tables.
  race       two `medallion run`s at once into one fresh lake in a bucket with versioning on.
             Every log entry was written once (one object version each), versions have no
             gaps, each run that says it committed a version finds its runId in that entry,
             every live `add` names a whole object of its recorded size, deltalake reads every
             table, and each source record is in the lake exactly once. One run may fail on a
             commit conflict; a third run then completes the lake. Then once more through a
             proxy that holds the first log entry PUT until the other run's PUT of the same
             entry arrives, so both pass their pre-commit check and meet at the conditional
             PUT: the store must take one (200) and refuse the other (412).
  faults     gs:// (as lake), az:// (as query table), file:// (as spec source) are refused,
             naming s3://, and no folder `gs:` appears; a wrong secret fails with 403 / access
             denied naming the bucket and never prints the secret (the right secret works, with
             moto checking signatures); a missing bucket is named as missing; through a proxy
             answering the first two requests of each kind with 503 SlowDown a run succeeds,
             and with --http-retries 1 (every request answered 503 twice) it fails naming the
             503; with the first request held 8 s, --http-timeout 1 abandons and retries it;
             through a proxy that resets the connection half way through a large data-file PUT,
             the lake is consistent whether or not the run succeeded, and a re-run completes it.
  requests   `query --stats` of count(*) on each gold table, both engines: at most
             MAX_REQUESTS requests, as Medallion counts them and as a counting proxy sees them.

Rows are compared as sorted lists of normalised values (tests/delta_readers.py's `norm`: floats
and decimals to 9 significant digits, timestamps in UTC), leaving out the columns that record
when a run ingested a row, with `_source_file` from the demo's data/ (or its copy's src/) on.
Prints one line per check, then the time and requests of each run
(local and S3); exits 1 if any check failed, and then keeps the work folder.
"""

import argparse
import base64
import csv
import glob
import json
import logging
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.client import HTTPConnection
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

import boto3
import deltalake
import duckdb
import moto
import pyarrow.parquet as pq
from botocore.config import Config
from botocore.exceptions import ClientError
from moto.server import ThreadedMotoServer

from delta_lifecycle import COMMIT, replay
from delta_readers import digest, load_duckdb_delta

REGION = "us-east-1"
KEY_ID = "medallion-test"
SECRET = "medallion-test-secret-3f9c27"
WRONG_SECRET = "not-the-secret-d41c8e95"
BUCKET = "shop"
RACE_BUCKET = "race"
MAX_REQUESTS = 10
COLLIDE_WAIT = 20  # seconds the proxy holds one writer's log entry for the other's
TIMEOUT_SECONDS = 300
# When a run ingested a row: differs between any two runs, so left out of comparisons.
INGEST_TIME_COLUMNS = {"_ingested_at", "ingested_at"}
SLOWDOWN_BODY = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
                 b"<Message>Please reduce your request rate.</Message>"
                 b"<RequestId>s3-lake-test</RequestId></Error>")
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
              "proxy-connection", "expect"}


# ── running medallion ────────────────────────────────────────────────────────────────────────


@dataclass
class Done:
    """One finished `medallion` process."""
    label: str
    argv: list
    rc: int | None
    out: str
    err: str
    seconds: float

    @property
    def ok(self):
        return self.rc == 0

    def json(self):
        try:
            return json.loads(self.out)
        except ValueError:
            return None

    def said(self, limit=400):
        """The outcome in one line: the first line of stderr and, if there is more, the last."""
        if self.rc is None:
            return f"no exit after {TIMEOUT_SECONDS} s"
        lines = [ln.strip() for ln in self.err.split("stack backtrace:")[0].splitlines()
                 if ln.strip()]
        text = f"exit {self.rc}: " + (" … ".join(dict.fromkeys([lines[0], lines[-1]]))
                                       if lines else "nothing on stderr")
        return text if len(text) <= limit else text[:limit] + "…"


class Medallion:
    def __init__(self, binary, env):
        self.binary, self.env = binary, env

    def __call__(self, label, *args, env=None, cwd=None):
        argv = [self.binary, *map(str, args)]
        started = time.monotonic()
        try:
            p = subprocess.run(argv, capture_output=True, text=True, errors="replace",
                               env=env or self.env, cwd=cwd, timeout=TIMEOUT_SECONDS)
            rc, out, err = p.returncode, p.stdout, p.stderr
        except subprocess.TimeoutExpired as e:
            rc, out, err = None, e.stdout or "", e.stderr or ""
            out, err = (x.decode(errors="replace") if isinstance(x, bytes) else x
                        for x in (out, err))
        return Done(label, argv, rc, out, err, time.monotonic() - started)


def s3_env(endpoint, key_id=KEY_ID, secret=SECRET):
    """This process's environment with S3 settings as AWS tools read them, and no others."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_ACCESS_KEY_ID=key_id, AWS_SECRET_ACCESS_KEY=secret, AWS_REGION=REGION,
               AWS_ENDPOINT_URL=endpoint, RUST_BACKTRACE="0")
    return env


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ── the report ───────────────────────────────────────────────────────────────────────────────


class Report:
    def __init__(self):
        self.count, self.failed = 0, []
        self.runs = []  # (label, wall seconds, report elapsed ms or None, io dict or None)

    def check(self, ok, what, detail=""):
        """Prints one line: `ok   what — detail` (detail cut short), or `FAIL what` and the
        whole detail below it."""
        self.count += 1
        if not ok:
            self.failed.append(what)
            print(f"FAIL {what}" + (f"\n       {detail}" if detail else ""), flush=True)
        else:
            short = detail if len(detail) <= 160 else detail[:160] + "…"
            print(f"ok   {what}" + (f" — {short}" if detail else ""), flush=True)
        return ok

    def ran(self, done):
        """Records a pipeline run's time and I/O for the table printed at the end."""
        report = done.json() if done.ok else None
        self.runs.append((done.label, done.seconds,
                          report.get("elapsed_ms") if report else None,
                          report.get("io") if report else None, done.ok))

    def timings(self):
        print("\nruns: wall time includes process start (and the guest module's load); requests "
              "and bytes as each run's report counts them")
        print(f"  {'run':<50} {'wall s':>7} {'pipeline s':>10} {'reads':>6} {'read':>9} "
              f"{'writes':>6} {'written':>9} {'lists':>5}")
        for label, wall, ms, io, ok in self.runs:
            io = io or {}
            mb = lambda n: f"{n / 1e6:.2f} MB" if n is not None else "-"  # noqa: E731
            print(f"  {label + ('' if ok else ' (failed)'):<50} {wall:>7.1f} "
                  f"{(f'{ms / 1000:.1f}' if ms is not None else '-'):>10} "
                  f"{io.get('read_requests', '-'):>6} {mb(io.get('bytes_read')):>9} "
                  f"{io.get('write_requests', '-'):>6} {mb(io.get('bytes_written')):>9} "
                  f"{io.get('list_requests', '-'):>5}")


# ── moto and a fault-injecting proxy in front of it ──────────────────────────────────────────


def s3_client(endpoint, key_id=KEY_ID, secret=SECRET):
    return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=key_id,
                        aws_secret_access_key=secret, region_name=REGION,
                        config=Config(s3={"addressing_style": "path"}))


def moto_auth(endpoint, enforce):
    """Switches moto's IAM checks (signatures, policies) on for every request, or off."""
    req = urllib.request.Request(f"{endpoint}/moto-api/reset-auth", method="POST",
                                 data=b"0" if enforce else b"inf",
                                 headers={"Content-Type": "text/plain"})
    with urllib.request.urlopen(req, timeout=10) as r:
        r.read()


def request_kind(method, path, headers):
    """What a request does, as far as the proxy's faults are concerned."""
    query = urlsplit(path).query
    if method == "GET" and "list-type" in query:
        return "LIST"
    if "uploads" in query or "uploadId" in query:
        return f"{method} multipart"
    if method == "PUT" and headers.get("If-None-Match") == "*":
        return "PUT If-None-Match"
    if method == "GET" and headers.get("Range"):
        return "GET Range"
    return method


class FaultProxy(ThreadingHTTPServer):
    """An HTTP proxy on 127.0.0.1 in front of the S3 server that counts requests by kind and,
    by mode, misbehaves:

      pass           forwards everything
      slowdown       answers the first 2 requests of each kind with 503 SlowDown (S3's XML
                     error), without forwarding them; forwards the rest. Concurrent requests
                     share those 2, so one request may meet a single 503
      slowdown-each  the same for the first 2 attempts of each distinct request (method, path
                     and query, Range): every request needs 2 retries
      stall-first    holds the first request `stall` seconds before answering it
      collide        holds the first conditional PUT of a log entry (`_delta_log/….json`) until
                     a second PUT of the same key arrives (at most COLLIDE_WAIT seconds), then
                     forwards both and records the store's answers in `collided`
      drop-put       reads half the body of the first PUT of a data file (`.parquet`) of at
                     least `min_bytes`, then resets the connection without forwarding it
    """

    daemon_threads = True

    def __init__(self, upstream_port):
        super().__init__(("127.0.0.1", 0), ProxyHandler)
        self.upstream_port = upstream_port
        self.lock = threading.Lock()
        self.set_mode("pass")

    @property
    def endpoint(self):
        return f"http://127.0.0.1:{self.server_port}"

    def set_mode(self, mode, min_bytes=0, stall=0.0):
        with self.lock:
            self.mode, self.min_bytes, self.stall = mode, min_bytes, stall
            self.seen, self.faulted, self.dropped = Counter(), Counter(), []
            self.attempts = Counter()  # (method, path, range) → attempts
            self.collide_key, self.collided = None, []
            self.arrived = threading.Condition(self.lock)

    def decide(self, kind, method, path, length, rng):
        with self.lock:
            self.seen[kind] += 1
            self.attempts[(method, path, rng)] += 1
            if ((self.mode == "slowdown" and self.seen[kind] <= 2)
                    or (self.mode == "slowdown-each" and self.attempts[(method, path, rng)] <= 2)):
                self.faulted[kind] += 1
                return "slowdown"
            if (self.mode == "collide" and kind == "PUT If-None-Match"
                    and re.search(r"/_delta_log/\d{20}\.json$", urlsplit(path).path)):
                if self.collide_key is None:
                    self.collide_key = path
                if path == self.collide_key and len(self.collided) < 2:
                    self.collided.append(None)
                    self.arrived.notify_all()
                    self.arrived.wait_for(lambda: len(self.collided) >= 2, COLLIDE_WAIT)
                    return "collide"
            if self.mode == "stall-first" and sum(self.seen.values()) == 1:
                self.faulted[kind] += 1
                return "stall"
            if (self.mode == "drop-put" and not self.dropped and method == "PUT"
                    and urlsplit(path).path.endswith(".parquet") and length >= self.min_bytes):
                self.dropped.append((urlsplit(path).path, length))
                return "drop"
            return "forward"

    def handle_error(self, request, client_address):
        """Clients hanging up, and the connections `drop-put` resets, are routine here."""
        if not isinstance(sys.exc_info()[1], (ConnectionError, OSError, ValueError)):
            super().handle_error(request, client_address)


class ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def read_body(self):
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            body = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return body
                body += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def any_method(self):
        length = int(self.headers.get("Content-Length") or 0)
        kind = request_kind(self.command, self.path, self.headers)
        action = self.server.decide(kind, self.command, self.path, length,
                                    self.headers.get("Range"))
        if action == "drop":
            self.rfile.read(length // 2)
            # SO_LINGER 0: close with a reset, as a dying load balancer would.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       struct.pack("ii", 1, 0))
            self.close_connection = True
            self.connection.close()
            return
        body = self.read_body()
        if action == "stall":
            time.sleep(self.server.stall)
        if action == "slowdown":
            self.send_response_only(503, "Slow Down")
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(SLOWDOWN_BODY)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(SLOWDOWN_BODY)
            return
        if action == "collide":
            status = self.forward(body)
            with self.server.lock:
                self.server.collided[self.server.collided.index(None)] = status
            return
        self.forward(body)

    def forward(self, body):
        """Sends the request on to the S3 server and its answer back; returns the status."""
        upstream = HTTPConnection("127.0.0.1", self.server.upstream_port, timeout=120)
        try:
            headers = {k: v for k, v in self.headers.items()
                       if k.lower() not in HOP_BY_HOP and k.lower() != "content-length"}
            upstream.request(self.command, self.path, body=body, headers=headers)
            resp = upstream.getresponse()
            data = resp.read()
            self.send_response_only(resp.status, resp.reason)
            for k, v in resp.getheaders():
                if k.lower() not in HOP_BY_HOP and k.lower() != "content-length":
                    self.send_header(k, v)
            # A HEAD answer carries the object's length but no body.
            length = resp.getheader("Content-Length") if self.command == "HEAD" else len(data)
            self.send_header("Content-Length", str(length or 0))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
            return resp.status
        finally:
            upstream.close()

    def finish(self):
        try:
            super().finish()
        except (OSError, ValueError):
            pass

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = any_method


# ── reading tables ───────────────────────────────────────────────────────────────────────────


@dataclass
class Lake:
    """Where a lake is and how to read it."""
    uri: str                      # a local folder or s3://bucket/prefix
    storage_options: dict = field(default_factory=dict)

    def table(self, rel):
        return f"{self.uri}/{rel}"


def local_tables(lake_dir):
    """`layer/name` of every Delta table in a local lake."""
    return sorted(os.path.relpath(os.path.dirname(p), lake_dir)
                  for p in glob.glob(f"{lake_dir}/*/*/_delta_log"))


def s3_tables(s3, bucket, prefix):
    """`layer/name` of every Delta table under s3://bucket/prefix (one with a commit)."""
    found = set()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}/"):
        for obj in page.get("Contents", []):
            parts = obj["Key"][len(prefix) + 1:].split("/")
            if len(parts) == 4 and parts[2] == "_delta_log" and COMMIT.fullmatch(parts[3]):
                found.add(f"{parts[0]}/{parts[1]}")
    return sorted(found)


def source_name(location):
    """A source file's name from its folder on: the same for the demo's data/ folder on disk
    and for its copy in s3://shop/src/."""
    return re.sub(r"^.*?/(data|src)/", "", location)


def rows_of(arrow):
    """(count, digest, sorted lines) of an Arrow table, without ingestion-time columns and
    with `_source_file` (bronze, quarantine) as the file's name from data/ or src/ on."""
    columns = sorted(c for c in arrow.schema.names if c not in INGEST_TIME_COLUMNS)
    rows = arrow.to_pylist()
    if "_source_file" in columns:
        for r in rows:
            r["_source_file"] = source_name(r["_source_file"])
    return digest(columns, rows)


def by_deltalake(lake, rel):
    dt = deltalake.DeltaTable(lake.table(rel), storage_options=lake.storage_options or None)
    return rows_of(dt.to_pyarrow_table())


def by_duckdb(con, lake, rel):
    # Through Arrow: DuckDB's own Python conversion of time zones would need pytz.
    return rows_of(con.execute(f"SELECT * FROM delta_scan('{lake.table(rel)}')").to_arrow_table())


def differ(got, want):
    """'' if two (count, digest, lines) agree, else a short account of the difference."""
    if got[:2] == want[:2]:
        return ""
    extra = sorted(set(got[2]) - set(want[2]))[:2]
    missing = sorted(set(want[2]) - set(got[2]))[:2]
    return (f"{got[0]} rows, expected {want[0]}; unexpected {extra}; missing {missing}"
            .replace("\x1f", " | "))


def compare_lake(rep, stage, lake, reference, tables, con):
    """Each table of `lake`, read by deltalake and DuckDB, against deltalake on `reference`."""
    for rel in tables:
        try:
            want = by_deltalake(reference, rel)
        except Exception as e:  # noqa: BLE001
            rep.check(False, f"[{stage}] {rel}: deltalake reads the local reference", str(e))
            continue
        problems = []
        for reader, read in (("deltalake", lambda: by_deltalake(lake, rel)),
                             ("duckdb", lambda: by_duckdb(con, lake, rel))):
            try:
                d = differ(read(), want)
            except Exception as e:  # noqa: BLE001
                d = f"error: {' '.join(str(e).split())[:300]}"
            if d:
                problems.append(f"{reader}: {d}")
        rep.check(not problems, f"[{stage}] {rel}: deltalake and duckdb on {lake.uri} = local",
                  "; ".join(problems) or f"{want[0]} rows")


def duckdb_s3(port):
    """A DuckDB connection that reads s3:// from moto (httpfs secret) and Delta tables."""
    import duckdb_extension_httpfs  # noqa: F401  (the wheel ships the binary next to its module)

    con = duckdb.connect(config={"allow_unsigned_extensions": "true"})
    base = os.path.dirname(duckdb_extension_httpfs.__file__)
    found = glob.glob(os.path.join(base, "**", "*.duckdb_extension"), recursive=True)
    if not found:
        raise SystemExit(f"no httpfs.duckdb_extension inside {base}")
    con.execute(f"LOAD '{found[0]}'")
    load_duckdb_delta(con)
    con.execute("SET TimeZone = 'UTC'")
    con.execute(f"CREATE SECRET moto (TYPE S3, KEY_ID '{KEY_ID}', SECRET '{SECRET}', "
                f"REGION '{REGION}', ENDPOINT '127.0.0.1:{port}', URL_STYLE 'path', "
                "USE_SSL false)")
    return con


# ── the lake's log, object by object ─────────────────────────────────────────────────────────


def mirror(s3, bucket, prefix, dest):
    """Copies every object under s3://bucket/prefix/ to the folder `dest`."""
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}/"):
        for obj in page.get("Contents", []):
            path = os.path.join(dest, obj["Key"][len(prefix) + 1:])
            os.makedirs(os.path.dirname(path), exist_ok=True)
            s3.download_file(bucket, obj["Key"], path)


def check_log_integrity(rep, stage, s3, bucket, prefix, work, storage_options,
                        may_be_empty=False):
    """Every table under s3://bucket/prefix: commits 0..N without gaps, every live `add` names
    an object of its recorded size that is a whole Parquet file with the recorded row count,
    and deltalake reads the table. An empty lake passes only if `may_be_empty` (after a run
    that changed nothing). Data files no log references are counted, not failed: a run that
    failed may leave some. Returns {layer/name: LogState}."""
    copy = os.path.join(work, f"mirror-{bucket}-{prefix.replace('/', '_')}")
    shutil.rmtree(copy, ignore_errors=True)
    mirror(s3, bucket, prefix, copy)
    states, problems, live = {}, [], set()
    tables = s3_tables(s3, bucket, prefix)
    for rel in tables:
        table_dir = os.path.join(copy, rel)
        log = os.listdir(os.path.join(table_dir, "_delta_log"))
        versions = sorted(int(m[1]) for n in log if (m := COMMIT.fullmatch(n)))
        if versions != list(range(versions[0], versions[-1] + 1)) or (
                versions[0] != 0 and not any(".checkpoint." in n for n in log)):
            problems.append(f"{rel}: commit versions {versions} have gaps")
        state = replay(table_dir)
        states[rel] = state
        for path, add in state.files.items():
            local = os.path.normpath(os.path.join(table_dir, unquote(path)))
            live.add(local)
            if not os.path.exists(local):
                problems.append(f"{rel}: the log adds {path}, which is not in the bucket")
                continue
            if os.path.getsize(local) != add["size"]:
                problems.append(f"{rel}: {path} is {os.path.getsize(local)} bytes, "
                                f"the log says {add['size']}")
                continue
            try:
                rows = pq.ParquetFile(local).metadata.num_rows
            except Exception as e:  # noqa: BLE001
                problems.append(f"{rel}: {path} is not a whole Parquet file ({e})")
                continue
            stats = json.loads(add.get("stats") or "{}")
            if "numRecords" in stats and stats["numRecords"] != rows:
                problems.append(f"{rel}: {path} holds {rows} rows, its stats say "
                                f"{stats['numRecords']}")
        try:
            uri = f"s3://{bucket}/{prefix}/{rel}"
            n = deltalake.DeltaTable(uri, storage_options=storage_options).to_pyarrow_table()
            want = sum(json.loads(a.get("stats") or "{}").get("numRecords", 0)
                       for a in state.files.values())
            if n.num_rows != want:
                problems.append(f"{rel}: deltalake reads {n.num_rows} rows, the log's "
                                f"statistics add up to {want}")
        except Exception as e:  # noqa: BLE001
            problems.append(f"{rel}: deltalake cannot read it: {' '.join(str(e).split())[:200]}")
    unreferenced = sum(f.endswith(".parquet") and "_delta_log" not in root
                       and os.path.normpath(os.path.join(root, f)) not in live
                       for root, _, files in os.walk(copy) for f in files)
    if not tables and not may_be_empty:
        problems.append("no tables found")
    rep.check(not problems,
              f"[{stage}] s3://{bucket}/{prefix}: {len(tables)} tables, gap-free logs, every "
              "live add a whole object of its recorded size, deltalake reads each",
              "; ".join(problems[:6]) or f"{unreferenced} unreferenced data files left over")
    return states


def run_id_of(s3, bucket, key):
    """The runId Medallion records in a log entry's commitInfo."""
    for line in s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode().splitlines():
        if line.strip() and "commitInfo" in (a := json.loads(line)):
            return (a["commitInfo"].get("medallion") or {}).get("runId")
    return None


# ── the stages ───────────────────────────────────────────────────────────────────────────────


@dataclass
class Ctx:
    rep: Report
    med: Medallion
    s3: object
    endpoint: str
    port: int
    work: str
    con: object
    local: Lake
    retail: str            # the demo's folder: pipeline.toml and data/
    scale: str             # the demo's --scale
    storage_options: dict

    def s3_lake(self, bucket_prefix):
        return Lake(f"s3://{bucket_prefix}", self.storage_options)


def preflight(rep, s3):
    """moto must refuse a second conditional create and answer ranges, in a plain and in a
    versioned bucket: the race and the reads below rely on both."""
    ok = True
    for bucket in (BUCKET, RACE_BUCKET):
        key = "_preflight/if-none-match"
        s3.put_object(Bucket=bucket, Key=key, Body=b"first", IfNoneMatch="*")
        try:
            s3.put_object(Bucket=bucket, Key=key, Body=b"second", IfNoneMatch="*")
            status = 200
        except ClientError as e:
            status = e.response["ResponseMetadata"]["HTTPStatusCode"]
        kept = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        refused = status == 412 and kept == b"first"
        ok &= rep.check(refused, f"[preflight] moto refuses a second PutObject If-None-Match: * "
                        f"(bucket {bucket})",
                        "" if refused else
                        f"the second conditional put answered {status} and the object holds "
                        f"{kept!r}: moto {moto.__version__} does not implement conditional "
                        "writes, so the race checks would prove nothing")
        got = {}
        for rng, want in (("bytes=1-3", b"irs"), ("bytes=-2", b"st"), ("bytes=3-", b"st")):
            r = s3.get_object(Bucket=bucket, Key=key, Range=rng)
            got[rng] = (r["ResponseMetadata"]["HTTPStatusCode"], r["Body"].read(), want)
        bad = {k: v[:2] for k, v in got.items() if v[:2] != (206, v[2])}
        ok &= rep.check(not bad, f"[preflight] moto answers Range GETs with 206 (bucket {bucket})",
                        f"wrong answers (status, body): {bad}" if bad else "")
        s3.delete_object(Bucket=bucket, Key=key)
    return ok


def stage_demo(c):
    """The demo into a local lake and into two S3 lakes; the S3 tables read like the local."""
    rep = c.rep
    runs = [("demo local (guest)", c.local.uri, []),
            ("demo local (native)", os.path.join(c.work, "lake-native"), ["--engine", "native"]),
            ("demo s3://shop/lake (guest)", "s3://shop/lake", []),
            ("demo s3://shop/native (native)", "s3://shop/native", ["--engine", "native"])]
    for label, lake, extra in runs:
        done = c.med(label, "demo", "--dir", c.retail, "--lake", lake, "--scale", c.scale,
                     "--json", *extra)
        rep.ran(done)
        if not rep.check(done.ok and (done.json() or {}).get("ok") is True,
                         f"[demo] medallion demo --lake {lake} {' '.join(extra)}".rstrip(),
                         done.said() if not done.ok else f"{done.seconds:.1f} s"):
            return False
    tables = local_tables(c.local.uri)
    rep.check(len(tables) >= 12, f"[demo] the local lake holds {len(tables)} tables",
              ", ".join(tables))
    check_landed(rep, "demo", c.local, tables, source_records(os.path.join(c.retail, "data")))
    for prefix in ("shop/lake", "shop/native"):
        in_bucket = s3_tables(c.s3, BUCKET, prefix.split("/", 1)[1])
        rep.check(in_bucket == tables, f"[demo] s3://{prefix} holds the same tables",
                  "" if in_bucket == tables else f"bucket: {in_bucket}; local: {tables}")
        compare_lake(rep, "demo", c.s3_lake(prefix), c.local, tables, c.con)

    # medallion's own reading of the bucket, through --lake, in both engines.
    gold = [t.split("/")[1] for t in tables if t.startswith("gold/")]
    want = {g: deltalake.DeltaTable(c.local.table(f"gold/{g}")).to_pyarrow_table().num_rows
            for g in gold}
    sql = "SELECT " + ", ".join(f'(SELECT count(*) FROM "{g}") AS "{g}"' for g in gold)
    for engine in ("guest", "native"):
        done = c.med(f"query --lake ({engine})", "query", sql, "--lake", "s3://shop/lake",
                     "--format", "json", "--engine", engine)
        got = (done.json() or [{}])[0] if done.ok else None
        rep.check(got == want, f"[demo] medallion query count(*) --lake s3://shop/lake "
                  f"--engine {engine} = local counts",
                  done.said() if not done.ok else f"got {got}, want {want}")

    # inspect: the history deltalake sees.
    for g in gold:
        done = c.med("inspect", "inspect", f"s3://shop/lake/gold/{g}", "--json")
        entries = done.json() if done.ok else None
        dt = deltalake.DeltaTable(f"s3://shop/lake/gold/{g}", storage_options=c.storage_options)
        versions = list(range(dt.version() + 1))
        ok = (isinstance(entries, list) and [e["version"] for e in entries] == versions
              and sum((e.get("rows_added") or 0) - (e.get("rows_removed") or 0)
                      for e in entries) == want[g])
        rep.check(ok, f"[demo] medallion inspect s3://shop/lake/gold/{g} --json: versions "
                  f"{versions}, {want[g]} rows net",
                  done.said() if not done.ok else f"got {str(entries)[:300]}")
    return True


def s3_source_spec(c):
    """Uploads the demo's sources to s3://shop/src/ and writes a spec reading them there."""
    data = os.path.join(c.retail, "data")
    uploaded = 0
    for root, _, files in os.walk(data):
        for f in files:
            path = os.path.join(root, f)
            c.s3.upload_file(path, BUCKET, "src/" + os.path.relpath(path, data))
            uploaded += 1
    with open(os.path.join(c.retail, "pipeline.toml"), encoding="utf-8") as f:
        text = f.read()
    spec, n = re.subn(r'^path = "data/', 'path = "s3://shop/src/', text, flags=re.M)
    folder = os.path.join(c.work, "s3-sources")
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "pipeline.toml")
    with open(path, "w", encoding="utf-8") as f:
        f.write(spec)
    globs = len(re.findall(r'^path = "s3://shop/src/[^"]*\*', spec, flags=re.M))
    return path, uploaded, n, globs


def stage_sources(c):
    rep = c.rep
    spec, uploaded, paths, globs = s3_source_spec(c)
    rep.check(paths >= 5 and globs >= 1,
              f"[sources] {uploaded} source files in s3://shop/src/, a spec with {paths} bronze "
              f"paths there ({globs} globs)")
    done = c.med("run, sources in s3://shop/src → s3://shop/lake2", "run", spec,
                 "--lake", "s3://shop/lake2", "--json")
    rep.ran(done)
    if not rep.check(done.ok, "[sources] medallion run (S3 sources) --lake s3://shop/lake2",
                     done.said() if not done.ok else f"{done.seconds:.1f} s"):
        return spec
    tables = local_tables(c.local.uri)
    compare_lake(rep, "sources", c.s3_lake("shop/lake2"), c.local, tables, c.con)
    files = set()
    for rel in (t for t in tables if t.startswith("bronze/")):
        dt = deltalake.DeltaTable(f"s3://shop/lake2/{rel}", storage_options=c.storage_options)
        files |= set(dt.to_pyarrow_table().column("_source_file").to_pylist())
    rep.check(files and all(f.startswith("s3://shop/src/") for f in files),
              f"[sources] bronze records {len(files)} source files, each as s3://shop/src/…",
              f"{sorted(files)[:4]}")
    return spec


def source_records(data):
    """Records in each of the demo's source files, counted here: CSV records after the header,
    non-blank NDJSON lines, Parquet rows. Each must land once, in bronze or its quarantine."""
    out = Counter()
    for root, _, files in os.walk(data):
        for f in files:
            path = os.path.join(root, f)
            name = os.path.relpath(path, data)
            if f.endswith(".csv"):
                with open(path, newline="", encoding="utf-8") as fh:
                    out[name] = sum(1 for _ in csv.reader(fh)) - 1
            elif f.endswith(".ndjson"):
                with open(path, encoding="utf-8") as fh:
                    out[name] = sum(1 for line in fh if line.strip())
            elif f.endswith(".parquet"):
                out[name] = pq.ParquetFile(path).metadata.num_rows
    return out


def landed(lake, tables):
    """Rows per source file in the lake's bronze tables and their quarantines."""
    bronze = {t.split("/")[1] for t in tables if t.startswith("bronze/")}
    out = Counter()
    for rel in tables:
        layer, name = rel.split("/")
        if layer == "bronze" or (layer == "quarantine" and name in bronze):
            dt = deltalake.DeltaTable(lake.table(rel), storage_options=lake.storage_options or None)
            out.update(source_name(f) for f in dt.to_pyarrow_table().column("_source_file")
                       .to_pylist())
    return out


def check_landed(rep, stage, lake, tables, want):
    got = landed(lake, tables)
    bad = {f: (got.get(f, 0), n) for f, n in (want | got).items() if got.get(f, 0) != want.get(f)}
    rep.check(not bad, f"[{stage}] each of {sum(want.values())} source records of "
              f"{len(want)} files is once in bronze or its quarantine in {lake.uri}",
              f"files with other counts (rows in the lake, records in the file): {bad}"
              if bad else "")


def stage_race(c, spec, prefix, stage, proxy=None):
    """Two runs at once into one lake, in a bucket that keeps every version of every object.
    With `proxy` (in `collide` mode) both runs' first log entry is held until the other's
    arrives, so both pass their pre-commit check and meet at the conditional PUT."""
    rep = c.rep
    lake = f"s3://{RACE_BUCKET}/{prefix}"
    env = s3_env(proxy.endpoint) if proxy else None
    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(c.med, f"{stage}: writer {i}", "run", spec, "--lake", lake,
                               "--json", env=env) for i in (1, 2)]
        writers = [f.result() for f in futures]
    for w in writers:
        rep.ran(w)
        report = w.json() or {}
        if w.ok:
            rep.check(report.get("ok") is True, f"[{stage}] {w.label.split(': ')[-1]} succeeded",
                      f"{sum(t.get('version') is not None for t in report.get('tables', []))} "
                      f"tables committed in {w.seconds:.1f} s")
        else:
            said = w.said()
            rep.check(bool(re.search(r"conflict|another writer|already exists", said, re.I))
                      and "panicked" not in w.err,
                      f"[{stage}] {w.label.split(': ')[-1]} failed, on a commit conflict",
                      f"{said}; committed before failing: {report.get('committed')}")
    if proxy:
        met, key = sorted(s or 0 for s in proxy.collided), proxy.collide_key
        proxy.set_mode("pass")
        rep.check(met == [200, 412], f"[{stage}] both runs PUT the same log entry with "
                  "If-None-Match: *; the store took one and refused the other (412)",
                  f"the store's answers to the held PUTs of {key}: {met}")
    third = c.med(f"{stage}: third run", "run", spec, "--lake", lake, "--json")
    rep.ran(third)
    rep.check(third.ok, f"[{stage}] a third run succeeds afterwards",
              third.said() if not third.ok else f"{third.seconds:.1f} s")

    # Each log entry was put once: a second writer of a version would add an object version.
    versions = Counter()
    for page in c.s3.get_paginator("list_object_versions").paginate(Bucket=RACE_BUCKET,
                                                                     Prefix=f"{prefix}/"):
        for v in page.get("Versions", []) + page.get("DeleteMarkers", []):
            if "/_delta_log/" in v["Key"] and COMMIT.fullmatch(v["Key"].rsplit("/", 1)[1]):
                versions[v["Key"]] += 1
    twice = {k: n for k, n in versions.items() if n != 1}
    rep.check(versions and not twice,
              f"[{stage}] each of {len(versions)} log entries was written exactly once",
              f"written more than once: {twice}" if twice else "")

    # A run that says it committed version V of a table finds its own runId in entry V.
    claims, wrong = 0, []
    for w in writers + [third]:
        report = w.json() or {}
        if not w.ok:
            continue
        for t in report.get("tables", []):
            for layer, version in ((t["layer"], t.get("version")),
                                   ("quarantine", t.get("quarantine_version"))):
                if version is None:
                    continue
                claims += 1
                key = f"{prefix}/{layer}/{t['table']}/_delta_log/{version:020d}.json"
                try:
                    got = run_id_of(c.s3, RACE_BUCKET, key)
                except ClientError as e:
                    got = f"missing ({e.response['Error']['Code']})"
                if got != report["run_id"]:
                    wrong.append(f"{w.label}: {key} has runId {got}, not {report['run_id']}")
    rep.check(claims and not wrong,
              f"[{stage}] {claims} versions the successful runs say they committed hold their "
              "runId", "; ".join(wrong[:4]))

    race = c.s3_lake(f"{RACE_BUCKET}/{prefix}")
    check_log_integrity(rep, stage, c.s3, RACE_BUCKET, prefix, c.work, c.storage_options)
    tables = local_tables(c.local.uri)
    check_landed(rep, stage, race, tables, source_records(os.path.join(c.retail, "data")))
    compare_lake(rep, stage, race, c.local, tables, c.con)


def stage_refusals(c, spec):
    """Schemes Medallion does not speak are refused naming the ones it does, and never taken
    for local folders."""
    rep = c.rep
    cwd = os.path.join(c.work, "cwd")
    os.makedirs(cwd, exist_ok=True)
    done = c.med("gs:// lake", "run", spec, "--lake", "gs://shop/lake", cwd=cwd)
    made = [os.path.join(r, d) for r, ds, _ in os.walk(c.work) for d in ds if d.startswith("gs:")]
    rep.check(not done.ok and "gs://" in done.err and "s3://" in done.err and not made,
              "[faults] --lake gs://shop/lake is refused naming gs:// and s3://, no folder "
              "gs: made", f"{done.said()}; folders made: {made}")
    done = c.med("az:// table", "query", "SELECT count(*) FROM t", "--table",
                 "t=az://container/t", "--engine", "native", cwd=cwd)
    rep.check(not done.ok and "az://" in done.err and "s3://" in done.err,
              "[faults] query --table t=az://container/t is refused naming az:// and s3://",
              done.said())
    with open(os.path.join(c.retail, "pipeline.toml"), encoding="utf-8") as f:
        text = f.read()
    folder = os.path.join(c.work, "file-scheme")
    os.makedirs(folder, exist_ok=True)
    bad_spec = os.path.join(folder, "pipeline.toml")
    with open(bad_spec, "w", encoding="utf-8") as f:
        f.write(text.replace('path = "data/customers.csv"',
                             f'path = "file://{c.retail}/data/customers.csv"'))
    done = c.med("file:// source", "run", bad_spec, "--lake", os.path.join(c.work, "file-lake"))
    rep.check(not done.ok and "file://" in done.err and "s3://" in done.err,
              "[faults] a spec source path file://… is refused naming file:// and s3://",
              done.said())


def stage_credentials(c, spec):
    """A wrong secret: 403 / access denied naming the bucket, the secret never printed."""
    rep = c.rep
    iam = boto3.client("iam", endpoint_url=c.endpoint, aws_access_key_id=KEY_ID,
                       aws_secret_access_key=SECRET, region_name=REGION)
    iam.create_user(UserName="medallion")
    iam.put_user_policy(UserName="medallion", PolicyName="s3", PolicyDocument=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
    key = iam.create_access_key(UserName="medallion")["AccessKey"]
    table = "t=delta:s3://shop/lake/gold/sales_by_region_day"
    moto_auth(c.endpoint, enforce=True)
    try:
        right = c.med("right secret", "query", "SELECT count(*) AS n FROM t", "--table", table,
                      "--format", "json", "--engine", "native",
                      env=s3_env(c.endpoint, key["AccessKeyId"], key["SecretAccessKey"]))
        wrong_env = s3_env(c.endpoint, key["AccessKeyId"], WRONG_SECRET)
        wrong_query = c.med("wrong secret", "query", "SELECT count(*) AS n FROM t", "--table",
                            table, "--engine", "native", env=wrong_env)
        wrong_run = c.med("wrong secret", "run", spec, "--lake", "s3://shop/denied",
                          env=wrong_env)
    finally:
        moto_auth(c.endpoint, enforce=False)
    rep.check(right.ok, "[faults] with moto checking signatures, the right secret reads",
              right.said())
    for what, done in (("query", wrong_query), ("run", wrong_run)):
        printed = WRONG_SECRET in done.out + done.err or key["SecretAccessKey"] in done.err
        denied = re.search(r"403|access denied", done.err, re.I)
        rep.check(not done.ok and denied and "shop" in done.err and not printed,
                  f"[faults] {what} with a wrong secret fails: 403 / access denied, names the "
                  "bucket, does not print the secret",
                  f"{done.said()}{' — THE SECRET WAS PRINTED' if printed else ''}")


def stage_missing_bucket(c, spec):
    rep = c.rep
    done = c.med("missing bucket", "run", spec, "--lake", "s3://nosuchbucket/lake")
    buckets = [b["Name"] for b in c.s3.list_buckets()["Buckets"]]
    rep.check(not done.ok and "nosuchbucket" in done.err
              and re.search(r"does not exist|no such bucket|NoSuchBucket", done.err, re.I)
              and "nosuchbucket" not in buckets,
              "[faults] --lake s3://nosuchbucket/lake: the message says the bucket does not "
              "exist (and none was made)", done.said())


def stage_slowdown(c, proxy, spec):
    """503 SlowDown: retried as --http-retries says."""
    rep = c.rep
    proxy.set_mode("slowdown")
    done = c.med("run through 503 SlowDown ×2 per kind", "run", spec, "--lake",
                 "s3://shop/lake503", "--json", env=s3_env(proxy.endpoint))
    rep.ran(done)
    faulted = dict(proxy.faulted)
    rep.check(done.ok and sum(faulted.values()) >= 4,
              "[faults] a run through a proxy answering 503 SlowDown to the first 2 requests "
              "of each kind succeeds", (done.said() if not done.ok else f"503s: {faulted}"))
    if done.ok:
        compare_lake(rep, "slowdown", c.s3_lake("shop/lake503"), c.local,
                     [t for t in local_tables(c.local.uri) if t.startswith("gold/")], c.con)
    for engine in ("guest", "native"):
        proxy.set_mode("slowdown-each")
        done = c.med("run through 503, --http-retries 1", "run", spec, "--lake",
                     f"s3://shop/lake503-{engine}", "--http-retries", "1", "--engine", engine,
                     env=s3_env(proxy.endpoint))
        rep.check(not done.ok and re.search(r"503|SlowDown|Slow Down", done.err)
                  and "panicked" not in done.err,
                  f"[faults] --http-retries 1 --engine {engine}, every request answered 503 "
                  "twice: the run fails, naming the 503", done.said())


def stage_timeout(c, proxy, spec):
    """--http-timeout: a request the store holds longer is abandoned and retried."""
    rep = c.rep
    stall = 8.0
    proxy.set_mode("stall-first", stall=stall)
    done = c.med("run, first request held 8 s, --http-timeout 1", "run", spec, "--lake",
                 "s3://shop/lake-timeout", "--http-timeout", "1", "--json",
                 env=s3_env(proxy.endpoint))
    rep.ran(done)
    held = dict(proxy.faulted)
    rep.check(done.ok and held and done.seconds < stall,
              f"[faults] the store holds the first request {stall:.0f} s; with --http-timeout 1 "
              "the run retries it and succeeds sooner",
              done.said() if not done.ok else f"held {held}, run took {done.seconds:.1f} s")


def stage_cut_upload(c, proxy, spec):
    """The connection reset half way through a large data-file PUT: whatever the run says,
    the lake is consistent afterwards, and a later run completes it."""
    rep = c.rep
    sizes = sorted(os.path.getsize(p)
                   for p in glob.glob(f"{c.local.uri}/*/*/*.parquet"))
    min_bytes = max(4096, sizes[-1] // 2) if sizes else 4096
    proxy.set_mode("drop-put", min_bytes=min_bytes)
    done = c.med("run with one PUT cut half way", "run", spec, "--lake", "s3://shop/lakecut",
                 "--json", env=s3_env(proxy.endpoint))
    rep.ran(done)
    dropped = list(proxy.dropped)
    proxy.set_mode("pass")
    report = done.json() or {}
    rep.check(len(dropped) == 1 and "panicked" not in done.err
              and (done.ok or report.get("changed_nothing") is True or report.get("committed")),
              f"[faults] the proxy cut one data-file PUT of ≥ {min_bytes} bytes half way; the "
              f"run {'succeeded' if done.ok else 'failed, saying what it committed'}",
              (f"cut {dropped}" if dropped else "no PUT was large enough to cut")
              + ("" if done.ok else f"; {done.said(1000)}"))
    check_log_integrity(rep, "cut upload", c.s3, BUCKET, "lakecut", c.work, c.storage_options,
                        may_be_empty=not done.ok)
    if not done.ok:
        again = c.med("re-run after the cut", "run", spec, "--lake", "s3://shop/lakecut",
                      "--json", env=s3_env(proxy.endpoint))
        rep.ran(again)
        rep.check(again.ok, "[faults] a re-run after the cut run succeeds", again.said())
        check_log_integrity(rep, "cut upload, re-run", c.s3, BUCKET, "lakecut", c.work,
                            c.storage_options)
    compare_lake(rep, "cut upload", c.s3_lake("shop/lakecut"), c.local,
                 [t for t in local_tables(c.local.uri) if t.startswith("gold/")], c.con)


def stage_requests(c, proxy):
    """count(*) of a gold table in the bucket takes a handful of requests."""
    rep = c.rep
    gold = [t.split("/")[1] for t in local_tables(c.local.uri) if t.startswith("gold/")]
    rows = []
    for g in gold:
        want = deltalake.DeltaTable(c.local.table(f"gold/{g}")).to_pyarrow_table().num_rows
        for engine in ("guest", "native"):
            proxy.set_mode("pass")
            done = c.med(f"stats {g}", "query", f'SELECT count(*) AS n FROM "{g}"', "--table",
                         f"{g}=delta:s3://shop/lake/gold/{g}", "--stats", "--format", "json",
                         "--engine", engine, env=s3_env(proxy.endpoint))
            seen = sum(proxy.seen.values())
            stats = None
            for line in reversed(done.err.splitlines()):
                try:
                    stats = json.loads(line)
                    break
                except ValueError:
                    continue
            n = (done.json() or [{}])[0].get("n") if done.ok else None
            ok = (done.ok and n == want and isinstance(stats, dict)
                  and stats.get("requests", MAX_REQUESTS + 1) <= MAX_REQUESTS
                  and seen <= MAX_REQUESTS)
            rep.check(ok, f"[requests] count(*) of s3://shop/lake/gold/{g} ({engine}): "
                      f"≤ {MAX_REQUESTS} requests",
                      done.said() if not done.ok else
                      f"{n} rows (want {want}); medallion counts {stats}; the proxy saw {seen} "
                      f"({dict(proxy.seen)})")
            if stats:
                rows.append((g, engine, stats.get("requests"), stats.get("bytes"), seen,
                             dict(proxy.seen), stats.get("ms")))
    print("\nrequests of count(*) on each gold table in the bucket:")
    print(f"  {'table':<22} {'engine':<7} {'medallion':>9} {'bytes':>8} {'proxy':>6} {'ms':>7}"
          "  proxy by kind")
    for g, engine, req, nbytes, seen, kinds, ms in rows:
        print(f"  {g:<22} {engine:<7} {req:>9} {nbytes:>8} {seen:>6} "
              f"{(f'{ms:.0f}' if ms is not None else '-'):>7}  {kinds}")


def stage_multipart(c, proxy):
    """A data file above the multipart threshold (32 MiB) goes up in parts, and readers get
    every row of it."""
    rep = c.rep
    import pyarrow as pa
    import pyarrow.parquet as pq
    src = os.path.join(c.work, "big")
    os.makedirs(src, exist_ok=True)
    rows = 12_000
    # Random base64 text barely compresses, so the bronze file stays above the threshold.
    blobs = [base64.b64encode(os.urandom(3_600)).decode() for _ in range(rows)]
    pq.write_table(pa.table({"id": list(range(rows)), "blob": blobs}),
                   os.path.join(src, "blobs.parquet"), compression="none")
    spec = os.path.join(src, "pipeline.toml")
    with open(spec, "w") as f:
        f.write('[pipeline]\nname = "big"\n\n[bronze.blobs]\npath = "blobs.parquet"\n')
    proxy.set_mode("pass")
    done = c.med("multipart run", "run", spec, "--lake", "s3://shop/big", "--engine", "native",
                 env=s3_env(proxy.endpoint))
    parts = {k: v for k, v in proxy.seen.items() if "multipart" in k}
    rep.check(done.ok and parts, "[multipart] a bronze data file above 32 MiB goes up in parts",
              done.said() if not done.ok else f"requests {dict(proxy.seen)}")
    if not done.ok:
        return
    sizes = [o["Size"] for o in c.s3.list_objects_v2(Bucket=BUCKET, Prefix="big/bronze/blobs/")
             .get("Contents", []) if o["Key"].endswith(".parquet")]
    table = deltalake.DeltaTable("s3://shop/big/bronze/blobs",
                                 storage_options=c.storage_options).to_pyarrow_table()
    got = sorted(zip(table.column("id").to_pylist(), table.column("blob").to_pylist()))
    rep.check(max(sizes, default=0) > 32 * 1024 * 1024 and got == list(enumerate(blobs)),
              "[multipart] deltalake reads every row of the multipart file",
              f"data files {sizes} bytes; {len(got)} rows of {rows}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("binary", help="the medallion executable")
    ap.add_argument("--scale", default="0.3", help="the demo's --scale (default 0.3)")
    ap.add_argument("--keep", help="work in this folder and keep it (default: a temporary one)")
    args = ap.parse_args()
    binary = os.path.abspath(args.binary)
    if not os.access(binary, os.X_OK):
        sys.exit(f"{binary} is not an executable")
    if args.keep:
        work = os.path.abspath(args.keep)
        shutil.rmtree(work, ignore_errors=True)
        os.makedirs(work)
    else:
        work = tempfile.mkdtemp(prefix="s3-lake-")
    started = time.monotonic()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    rep = Report()
    port = free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    moto.start()
    proxy = FaultProxy(port)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{port}"
    print(f"moto S3 at {endpoint}, fault proxy at {proxy.endpoint}, work in {work} "
          f"(deltalake {deltalake.__version__}, duckdb {duckdb.__version__})", flush=True)
    try:
        s3 = s3_client(endpoint)
        s3.create_bucket(Bucket=BUCKET)
        s3.create_bucket(Bucket=RACE_BUCKET)
        s3.put_bucket_versioning(Bucket=RACE_BUCKET,
                                 VersioningConfiguration={"Status": "Enabled"})
        if not preflight(rep, s3):
            print("\nmoto lacks what these checks rely on; nothing else was run")
            return 1
        storage_options = {"AWS_ENDPOINT_URL": endpoint, "AWS_ALLOW_HTTP": "true",
                           "AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET,
                           "AWS_REGION": REGION}
        c = Ctx(rep=rep, med=Medallion(binary, s3_env(endpoint)), s3=s3, endpoint=endpoint,
                port=port, work=work, con=duckdb_s3(port), local=Lake(os.path.join(work, "lake")),
                retail=os.path.join(work, "retail"), scale=args.scale,
                storage_options=storage_options)
        if stage_demo(c):
            spec = stage_sources(c)
            stage_race(c, spec, "lake", "race")
            proxy.set_mode("collide")
            stage_race(c, spec, "collide", "race at the PUT", proxy)
            stage_refusals(c, spec)
            stage_credentials(c, spec)
            stage_missing_bucket(c, spec)
            stage_slowdown(c, proxy, spec)
            stage_timeout(c, proxy, spec)
            stage_cut_upload(c, proxy, spec)
            stage_requests(c, proxy)
            stage_multipart(c, proxy)
        rep.timings()
    finally:
        proxy.shutdown()
        proxy.server_close()
        moto.stop()
    took = time.monotonic() - started
    print(f"\n{rep.count - len(rep.failed)} of {rep.count} checks passed in {took:.0f} s")
    if rep.failed:
        print(f"{len(rep.failed)} FAILED:")
        for what in rep.failed:
            print(f"  {what}")
        print(f"work folder kept: {work}")
        return 1
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
