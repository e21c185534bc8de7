#!/usr/bin/env python3
"""Serving benchmark: `medallion serve` vs PostgreSQL, the same dashboard over the same wire.

The data
  `medallion demo --scale N` builds the retail lake (at 20: ~196k order lines, ~89k orders,
  ~35k customer segments). `medallion serve --lake` serves it as is (each query reads the Delta
  tables at their latest version). A throwaway PostgreSQL (Debian's `postgresql` package, the
  newest /usr/lib/postgresql/<ver>) gets the same tables: gold.sales_by_region_day,
  gold.customer_segments, gold.low_stock_alerts, silver.orders and silver.order_lines, read
  from the lake's Delta tables with deltalake (a reader we did not write), column types mapped
  one to one (int64 -> bigint, double -> double precision, string -> text, date32 -> date,
  timestamp UTC -> timestamptz), loaded with COPY, given the primary keys a DBA would declare,
  then ANALYZEd. Its settings: defaults (shared_buffers 128MB, JIT on, 2 parallel workers per
  gather) except fsync, synchronous_commit and full_page_writes off (it is a read benchmark;
  nothing durable is at stake), work_mem 64MB (--pg-work-mem; the default 4MB sends the silver
  queries' sorts to disk), timezone UTC and max_connections sized for the clients.
  `medallion serve` runs with its defaults (--max-memory 2GiB, partitions = cores) plus any
  --serve-arg.

The dashboard (QUERIES; the same SQL text and parameters on both servers)
  region_range    sales by region over a date range (gold, parameters: two dates)
  daily_revenue   the daily revenue series (gold)
  segments        customers, revenue, orders and recency per segment (gold)
  customer        one customer's segment row, a drill-down (gold, parameter: a customer id
                  drawn at random per execution)
  low_stock       the 50 largest shortfalls (gold)
  top_categories  revenue and units per category (silver order_lines, a scan)
  orders_join     orders per channel and status joined with their lines (silver, join + count
                  distinct: the heavy one)
  Before timing, every query's answer from Medallion is compared with PostgreSQL's (column
  names, row count and order, values; numbers within 1e-9 relative): the run stops at the first
  difference.

What it measures, per number of concurrent clients (--clients, default 1 and 50), Medallion's
phase first, then PostgreSQL's (never both at once)
  Each client is a thread with its own psycopg 3 connection (opened before the clock starts)
  that loops over the dashboard's queries, starting at a different one, for --seconds.
  p50/p99   latency of each query: execute + fetchall, in the client, ms
  q/s       completed queries per second, per query and in total
  errors    failed queries (the first messages are kept and printed)
  CPU       server CPU seconds over the phase (utime+stime from /proc; PostgreSQL: postmaster,
            its backends and reaped children) and ms of server CPU per query; the client's own
            CPU seconds too, since it shares the machine's cores with the server
  memory    server RSS before the clients connect, peak while they run (sampled every 100 ms),
            after they disconnect. Medallion: VmRSS of its one process (and VmHWM, its peak since
            start). PostgreSQL: the sum of VmRSS over the postmaster and its children, which
            counts the shared buffers once per backend that touched them; PSS (smaps_rollup)
            splits shared pages among processes and is printed next to it
  load      os.getloadavg() at the start and end of the run and of every phase (a 1-minute
            average: it lags, and PostgreSQL's 50 busy backends raise it for the next phase too)
  bytes     the served tables on disk: the lake's Delta folders vs PostgreSQL's relations
            (heap + TOAST + indexes)
  psycopg prepares a statement on the server after its 5th execution on a connection (as the
  PostgreSQL JDBC driver does); --prepare never sends every query unprepared instead (the
  simple query protocol without parameters, the unnamed extended one with them).

Not a test: it takes minutes (1 min 40 s at the defaults here) and its figures depend on the
machine (2 shared cores here: the Python clients, the server under test and the idle other
server share them; a busy neighbour, e.g. a cargo build, skews the figures).

No build here: --bin, else the release binary if it has `serve`, else the debug one (several
times slower; the header says which). `cargo build --release --bin medallion` first for figures
worth quoting.

Needs: apt `postgresql` (initdb/postgres; installed with apt-get when absent), pip
`psycopg[binary]` (installed into the running interpreter when absent), deltalake and pyarrow
(the project's venv). Run as root (PostgreSQL runs as the `postgres` user) with the venv:
  ~/.cache/medallion/venv/bin/python tests/bench/serve.py [--scale 20] [--seconds 20] [--json]
"""

from __future__ import annotations

import argparse
import decimal
import importlib
import importlib.util
import io
import json
import math
import os
import pwd
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
from pg_cluster import postgres_bindir  # noqa: E402

TARGET = Path(os.environ.get("CARGO_TARGET_DIR", Path.home() / ".cache/medallion/target"))

# The lake's tables the dashboard reads, and the keys PostgreSQL gets for them.
PG_TABLES = {
    "gold.sales_by_region_day": ("region", "day"),
    "gold.customer_segments": ("customer_id",),
    "gold.low_stock_alerts": None,
    "silver.orders": ("order_id",),
    "silver.order_lines": ("order_id", "line_no"),
}

# name -> (what a dashboard shows, SQL). %s are parameters (see query_params).
QUERIES = {
    "region_range": ("sales by region over a date range", """
SELECT region, sum(orders) AS orders, sum(units) AS units, sum(revenue) AS revenue
FROM gold.sales_by_region_day
WHERE day BETWEEN %s AND %s
GROUP BY region
ORDER BY region"""),
    "daily_revenue": ("daily revenue series", """
SELECT day, sum(revenue) AS revenue, sum(orders) AS orders, sum(units) AS units
FROM gold.sales_by_region_day
GROUP BY day
ORDER BY day"""),
    "segments": ("customer segments", """
SELECT segment, count(*) AS customers, sum(monetary) AS revenue,
       avg(frequency) AS avg_orders, avg(recency_days) AS avg_recency_days
FROM gold.customer_segments
GROUP BY segment
ORDER BY segment"""),
    "customer": ("one customer (drill-down)", """
SELECT customer_id, region, frequency, monetary, recency_days, segment
FROM gold.customer_segments
WHERE customer_id = %s"""),
    "low_stock": ("low-stock alerts", """
SELECT warehouse, product_id, name, category, on_hand, reorder_level, shortfall
FROM gold.low_stock_alerts
ORDER BY shortfall DESC, product_id, warehouse
LIMIT 50"""),
    "top_categories": ("top categories (silver scan)", """
SELECT category, sum(amount) AS revenue, sum(quantity) AS units, count(DISTINCT order_id) AS orders
FROM silver.order_lines
WHERE status <> 'cancelled'
GROUP BY category
ORDER BY revenue DESC, category
LIMIT 10"""),
    "orders_join": ("orders x lines per channel, status (silver join)", """
SELECT o.channel, o.status, count(DISTINCT o.order_id) AS orders, count(*) AS lines,
       sum(l.amount) AS revenue, avg(l.quantity) AS avg_quantity
FROM silver.orders o
JOIN silver.order_lines l ON l.order_id = o.order_id
GROUP BY o.channel, o.status
ORDER BY o.channel, o.status"""),
}

REL_TOL = 1e-9
ABS_TOL = 1e-6
SAMPLE_INTERVAL = 0.1
STUCK_AFTER = 120


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def pct(values, p):
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def loadavg():
    return os.getloadavg()[0]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------------------
# What this needs: psycopg, PostgreSQL's binaries, a medallion binary with `serve`

def ensure_psycopg():
    if importlib.util.find_spec("psycopg") is None:
        log(f"installing psycopg[binary] into {sys.executable}")
        subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", "psycopg[binary]"])
        importlib.invalidate_caches()


def has_serve(path: Path):
    return path.exists() and subprocess.run([str(path), "serve", "--help"],
                                            capture_output=True).returncode == 0


def medallion_bin(args):
    if args.bin:
        path = Path(args.bin)
        if not has_serve(path):
            raise SystemExit(f"{path} has no `serve` command")
        return path, "given"
    for profile in ("release", "debug"):
        path = TARGET / profile / "medallion"
        if has_serve(path):
            if profile == "debug":
                log(f"using the DEBUG build {path} (the release one is missing or has no `serve`): "
                    "figures are pessimistic; `cargo build --release --bin medallion` first")
            return path, profile
    raise SystemExit(f"no medallion with `serve` under {TARGET}/{{release,debug}}: "
                     "run `cargo build --release --bin medallion` first, or pass --bin")


# ---------------------------------------------------------------------------------------------
# /proc: memory and CPU of a process set

def proc_status(pid, key):
    """A kB field of /proc/<pid>/status (VmRSS, VmHWM) in bytes; 0 if the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def proc_pss(pid):
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return 0


def proc_stat(pid):
    """(ppid, utime+stime, cutime+cstime) in clock ticks, or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # fields[0] is the state (field 3 of stat): ppid is field 4, utime..cstime fields 14-17.
    return int(fields[1]), int(fields[11]) + int(fields[12]), int(fields[13]) + int(fields[14])


TICKS = os.sysconf("SC_CLK_TCK")


def children_of(pid):
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = proc_stat(int(entry))
            if st and st[0] == pid:
                kids.append(int(entry))
    return kids


class ServerProcess:
    """A server to measure: its pids (the main one and, for PostgreSQL, its children)."""

    name = "server"
    main_pid = 0

    def pids(self):
        return [self.main_pid]

    def rss(self):
        return sum(proc_status(p, "VmRSS") for p in self.pids())

    def pss(self):
        return sum(proc_pss(p) for p in self.pids())

    def cpu_seconds(self):
        total = 0
        for i, p in enumerate(self.pids()):
            st = proc_stat(p)
            if st:
                # The main process also carries the CPU of children it has reaped.
                total += st[1] + (st[2] if i == 0 else 0)
        return total / TICKS


class MemorySampler(threading.Thread):
    """Peak RSS (and PSS) of a server, sampled until stopped."""

    def __init__(self, server: ServerProcess):
        super().__init__(daemon=True)
        self.server, self.peak_rss, self.peak_pss = server, 0, 0
        self.halt = threading.Event()

    def run(self):
        while not self.halt.is_set():
            self.peak_rss = max(self.peak_rss, self.server.rss())
            if isinstance(self.server, Postgres):
                self.peak_pss = max(self.peak_pss, self.server.pss())
            self.halt.wait(SAMPLE_INTERVAL)

    def stop(self):
        self.halt.set()
        self.join()


def dir_bytes(path: Path):
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def tail(path: Path, lines=30):
    try:
        return "".join(path.read_text(errors="replace").splitlines(True)[-lines:])
    except FileNotFoundError:
        return ""


# ---------------------------------------------------------------------------------------------
# The two servers

class MedallionServe(ServerProcess):
    name = "medallion"

    def __init__(self, bin_: Path, lake: Path, work: Path, extra: list[str]):
        self.port = free_port()
        self.stderr_path = work / "medallion-serve.stderr"
        # HTTP off: only the PostgreSQL side is measured, and 8080 may be taken.
        self.cmd = [str(bin_), "serve", "--lake", str(lake), "--pg-port", str(self.port),
                    "--http-port", "0", *extra]
        self.proc = None

    def start(self, psycopg):
        started = time.perf_counter()
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.DEVNULL,
                                     stderr=open(self.stderr_path, "w"))
        self.main_pid = self.proc.pid
        deadline = time.time() + 60
        while True:
            if self.proc.poll() is not None:
                raise SystemExit(f"medallion serve exited ({self.proc.returncode}):\n"
                                 + tail(self.stderr_path))
            try:
                with psycopg.connect(**self.dsn(), connect_timeout=2) as c:
                    c.execute("SELECT 1").fetchall()
                break
            except psycopg.OperationalError:
                if time.time() > deadline:
                    raise SystemExit("medallion serve did not answer within 60 s:\n"
                                     + tail(self.stderr_path))
                time.sleep(0.1)
        return time.perf_counter() - started

    def dsn(self):
        return dict(host="127.0.0.1", port=self.port, user="medallion", dbname="lake",
                    autocommit=True)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


PG_TYPES = {
    "int64": "bigint", "int32": "integer", "int16": "smallint", "double": "double precision",
    "float": "real", "string": "text", "large_string": "text", "string_view": "text",
    "bool": "boolean", "date32[day]": "date",
}

PG_SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "timezone": "UTC",
}
# PostgreSQL's default work_mem (4MB) sends the silver queries' sorts to disk; an analyst's
# server would have more (--pg-work-mem).
PG_WORK_MEM = "64MB"


def pg_type(arrow_type):
    import pyarrow as pa  # noqa: PLC0415

    if pa.types.is_timestamp(arrow_type):
        return "timestamptz" if arrow_type.tz else "timestamp"
    if pa.types.is_decimal(arrow_type):
        return f"numeric({arrow_type.precision},{arrow_type.scale})"
    try:
        return PG_TYPES[str(arrow_type)]
    except KeyError:
        raise SystemExit(f"no PostgreSQL type for Arrow {arrow_type}") from None


class Postgres(ServerProcess):
    """A PostgreSQL cluster of its own in `work/pg`, run as the `postgres` user."""

    name = "postgresql"

    def __init__(self, bindir: Path, work: Path, max_connections: int, work_mem: str):
        self.bindir, self.port = bindir, free_port()
        self.root = work / "pg"
        self.data, self.sock = self.root / "data", self.root / "sock"
        self.log_path = self.root / "postgres.log"
        self.settings = {**PG_SETTINGS, "work_mem": work_mem,
                         "max_connections": str(max_connections)}
        self.proc = None
        pw = pwd.getpwnam("postgres")
        self.uid, self.gid = pw.pw_uid, pw.pw_gid

    def as_postgres(self, **kw):
        return dict(user=self.uid, group=self.gid, extra_groups=[], cwd=self.root,
                    env={"PATH": os.environ["PATH"], "LC_ALL": "C", "HOME": str(self.root)}, **kw)

    def start(self, psycopg):
        started = time.perf_counter()
        self.sock.mkdir(parents=True)
        for p in (self.root, self.sock):
            os.chown(p, self.uid, self.gid)
        subprocess.run([str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres",
                        "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync"],
                       check=True, stdout=subprocess.DEVNULL,
                       **self.as_postgres())
        args = [str(self.bindir / "postgres"), "-D", str(self.data), "-p", str(self.port),
                "-k", str(self.sock)]
        for k, v in self.settings.items():
            args += ["-c", f"{k}={v}"]
        self.log_file = open(self.log_path, "w")
        os.chown(self.log_path, self.uid, self.gid)
        self.proc = subprocess.Popen(args, stdout=self.log_file, stderr=subprocess.STDOUT,
                                     **self.as_postgres())
        self.main_pid = self.proc.pid
        deadline = time.time() + 60
        while True:
            if self.proc.poll() is not None:
                raise SystemExit(f"postgres exited ({self.proc.returncode}):\n" + tail(self.log_path))
            try:
                with psycopg.connect(**self.dsn(dbname="postgres"), connect_timeout=2) as c:
                    c.execute("CREATE DATABASE lake")
                break
            except psycopg.OperationalError:
                if time.time() > deadline:
                    raise SystemExit("postgres did not start within 60 s:\n" + tail(self.log_path))
                time.sleep(0.1)
        return time.perf_counter() - started

    def dsn(self, dbname="lake"):
        return dict(host="127.0.0.1", port=self.port, user="postgres", dbname=dbname,
                    autocommit=True)

    def pids(self):
        return [self.main_pid, *children_of(self.main_pid)] if self.main_pid else []

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def load(self, psycopg, lake: Path):
        """COPY the lake's tables in (read with deltalake), keys, ANALYZE. Returns rows per table."""
        import pyarrow.csv as pacsv  # noqa: PLC0415
        from deltalake import DeltaTable  # noqa: PLC0415

        started = time.perf_counter()
        counts = {}
        with psycopg.connect(**self.dsn()) as c:
            c.execute("CREATE SCHEMA gold")
            c.execute("CREATE SCHEMA silver")
            for qualified, key in PG_TABLES.items():
                table = DeltaTable(str(lake / qualified.replace(".", "/"))).to_pyarrow_table()
                cols = ", ".join(f'"{f.name}" {pg_type(f.type)}' for f in table.schema)
                c.execute(f"CREATE TABLE {qualified} ({cols})")
                buf = io.BytesIO()
                # Strings are always quoted, nulls are empty and unquoted: COPY's CSV reads them
                # back as '' and NULL.
                pacsv.write_csv(table, buf, pacsv.WriteOptions(include_header=False))
                names = ", ".join(f'"{n}"' for n in table.column_names)
                with c.cursor().copy(f"COPY {qualified} ({names}) FROM STDIN (FORMAT csv)") as cp:
                    view = buf.getbuffer()
                    for i in range(0, len(view), 1 << 20):
                        cp.write(view[i:i + (1 << 20)])
                if key:
                    c.execute(f"ALTER TABLE {qualified} ADD PRIMARY KEY ({', '.join(key)})")
                (n,) = c.execute(f"SELECT count(*) FROM {qualified}").fetchone()
                if n != table.num_rows:
                    raise SystemExit(f"{qualified}: {n} rows in PostgreSQL, {table.num_rows} in the lake")
                counts[qualified] = n
            c.execute("ANALYZE")
            (size,) = c.execute(
                "SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname IN ('gold', 'silver') AND c.relkind = 'r'").fetchone()
            (version,) = c.execute("SHOW server_version").fetchone()
        return counts, int(size), version, time.perf_counter() - started

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # fast shutdown
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                for p in self.pids():
                    try:
                        os.kill(p, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                self.proc.wait()
        if getattr(self, "log_file", None):
            self.log_file.close()


# ---------------------------------------------------------------------------------------------
# The dashboard's parameters and the answer check

class Dashboard:
    """The queries with their parameters, drawn from the lake's data."""

    def __init__(self, lake: Path, seed: int, names: list[str]):
        from deltalake import DeltaTable  # noqa: PLC0415

        days = DeltaTable(str(lake / "gold/sales_by_region_day")).to_pyarrow_table(
            columns=["day"]).column("day").to_pylist()
        days = sorted(set(days))
        # The range: from the first day over the first half of the days (at least two).
        self.day_range = (days[0], days[max(1, len(days) // 2)] if len(days) > 1 else days[0])
        ids = DeltaTable(str(lake / "gold/customer_segments")).to_pyarrow_table(
            columns=["customer_id"]).column("customer_id").to_pylist()
        rng = random.Random(seed)
        self.customer_ids = rng.sample(ids, min(len(ids), 500)) + [max(ids) + 1]  # + a miss
        self.names = names

    def params(self, name, rng):
        if name == "region_range":
            return list(self.day_range)
        if name == "customer":
            return [rng.choice(self.customer_ids)]
        return None

    def check_params(self, name):
        if name == "customer":
            return [[cid] for cid in self.customer_ids[:20] + self.customer_ids[-1:]]
        return [self.params(name, None)]


def same_value(a, b):
    if a is None or b is None:
        return a is None and b is None
    numbers = (int, float, decimal.Decimal)
    if isinstance(a, numbers) and isinstance(b, numbers):
        return math.isclose(float(a), float(b), rel_tol=REL_TOL, abs_tol=ABS_TOL)
    return a == b


def check_answers(psycopg, dashboard, med: MedallionServe, pg: Postgres):
    """Every query's answer from both servers; SystemExit at the first difference."""
    with psycopg.connect(**med.dsn()) as mc, psycopg.connect(**pg.dsn()) as pc:
        for name in dashboard.names:
            sql = QUERIES[name][1]
            rows_total = 0
            for params in dashboard.check_params(name):
                answers = []
                for conn in (mc, pc):
                    cur = conn.execute(sql, params)
                    answers.append(([d.name for d in cur.description], cur.fetchall()))
                (mcols, mrows), (pcols, prows) = answers
                where = f"query {name} with parameters {params}"
                if mcols != pcols:
                    raise SystemExit(f"{where}: columns differ: medallion {mcols}, PostgreSQL {pcols}")
                if len(mrows) != len(prows):
                    raise SystemExit(f"{where}: medallion returned {len(mrows)} rows, PostgreSQL "
                                     f"{len(prows)}\nmedallion: {mrows[:5]}\nPostgreSQL: {prows[:5]}")
                for i, (mr, pr) in enumerate(zip(mrows, prows)):
                    for col, a, b in zip(mcols, mr, pr):
                        if not same_value(a, b):
                            raise SystemExit(f"{where}: row {i} column {col}: medallion {a!r}, "
                                             f"PostgreSQL {b!r}\nmedallion row: {mr}\n"
                                             f"PostgreSQL row: {pr}")
                rows_total += len(mrows)
            log(f"  {name:<15} same answer ({rows_total} rows over "
                f"{len(dashboard.check_params(name))} execution(s))")


# ---------------------------------------------------------------------------------------------
# One phase: N clients looping over the dashboard against one server

def run_phase(psycopg, server, dashboard, clients, seconds, prepare, seed):
    names = dashboard.names
    conn_kw = server.dsn()
    if prepare == "never":
        conn_kw["prepare_threshold"] = None
    mem_before = (server.rss(), server.pss() if isinstance(server, Postgres) else None)
    conns = []
    try:
        for _ in range(clients):
            conns.append(psycopg.connect(**conn_kw, connect_timeout=30))
    except psycopg.Error as e:
        raise SystemExit(f"{server.name}: connection {len(conns) + 1} of {clients} refused: {e}") from e
    latencies = [{n: [] for n in names} for _ in range(clients)]
    errors = [{n: [] for n in names} for _ in range(clients)]
    barrier = threading.Barrier(clients + 1)
    deadline = [0.0]

    def client(i):
        rng = random.Random(seed * 1000 + i)
        conn = conns[i]
        k = i % len(names)
        barrier.wait()
        while time.perf_counter() < deadline[0]:
            name = names[k]
            k = (k + 1) % len(names)
            params = dashboard.params(name, rng)
            t0 = time.perf_counter()
            try:
                conn.execute(QUERIES[name][1], params).fetchall()
                latencies[i][name].append((time.perf_counter() - t0) * 1000)
            except Exception as e:  # noqa: BLE001 - every failure is counted, none ends the client
                state = getattr(e, "sqlstate", None)
                errors[i][name].append(f"{type(e).__name__}: {str(e).strip()}"
                                       + (f" (SQLSTATE {state})" if state else ""))
                if conn.closed or conn.broken:
                    try:
                        conn = conns[i] = psycopg.connect(**conn_kw, connect_timeout=30)
                    except psycopg.Error as e2:
                        errors[i][name].append(f"reconnect: {e2}")
                        time.sleep(0.5)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    sampler = MemorySampler(server)
    sampler.start()
    load_before = loadavg()
    cpu_before, client_cpu_before = server.cpu_seconds(), time.process_time()
    started = time.perf_counter()
    deadline[0] = started + seconds
    barrier.wait()
    # A query may run past the deadline; one that has not returned STUCK_AFTER later is a hang.
    for t in threads:
        t.join(max(0.0, deadline[0] + STUCK_AFTER - time.perf_counter()))
    stuck = sum(t.is_alive() for t in threads)
    if stuck:
        raise SystemExit(f"{server.name}: {stuck} of {clients} clients still waiting for a query "
                         f"{STUCK_AFTER} s after the end of the phase")
    elapsed = time.perf_counter() - started
    cpu = server.cpu_seconds() - cpu_before
    client_cpu = time.process_time() - client_cpu_before
    load_after = loadavg()
    sampler.stop()
    for c in conns:
        c.close()
    time.sleep(0.5)  # let PostgreSQL's backends exit
    mem_after = (server.rss(), server.pss() if isinstance(server, Postgres) else None)

    per_query = {}
    for n in names:
        lat = [x for per in latencies for x in per[n]]
        errs = [x for per in errors for x in per[n]]
        per_query[n] = {
            "count": len(lat), "qps": len(lat) / elapsed,
            "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99),
            "mean_ms": statistics.fmean(lat) if lat else float("nan"),
            "errors": len(errs), "error_samples": sorted(set(errs))[:5],
        }
    done = sum(q["count"] for q in per_query.values())
    result = {
        "server": server.name, "clients": clients, "seconds": elapsed,
        "queries": per_query, "total_qps": done / elapsed,
        "errors": sum(q["errors"] for q in per_query.values()),
        "server_cpu_s": cpu, "server_cpu_ms_per_query": cpu * 1000 / done if done else float("nan"),
        "client_cpu_s": client_cpu,
        "rss_before": mem_before[0], "rss_peak": max(sampler.peak_rss, mem_before[0]),
        "rss_after": mem_after[0],
        "load": (load_before, load_after),
        "alive": server.alive(),
    }
    if isinstance(server, Postgres):
        result.update(pss_before=mem_before[1], pss_peak=sampler.peak_pss, pss_after=mem_after[1])
    else:
        result["vmhwm"] = proc_status(server.main_pid, "VmHWM")
    log(f"  {server.name:<10} {clients:>3} client(s): {result['total_qps']:.1f} q/s, "
        f"{result['errors']} errors, server CPU {cpu:.1f} s, RSS {mb(mem_before[0])} -> peak "
        f"{mb(result['rss_peak'])} -> {mb(mem_after[0])}, load {load_before:.2f} -> {load_after:.2f}")
    return result


def mb(n):
    return f"{n / 2**20:.0f} MiB" if n is not None else "-"


# ---------------------------------------------------------------------------------------------
# Report

def print_report(meta, phases):
    print(f"\n`medallion serve` ({meta['medallion_build']} build) vs PostgreSQL {meta['pg_version']}"
          f" — retail demo at scale {meta['scale']}, {meta['seconds']:g} s per phase, "
          f"{os.cpu_count()} cores, psycopg {meta['psycopg']} (prepare: {meta['prepare']})")
    print(f"PostgreSQL settings: {', '.join(f'{k}={v}' for k, v in meta['pg_settings'].items())} "
          "(fsync off: a read-only benchmark, nothing durable at stake); other settings default")
    print(f"data: {', '.join(f'{t} {n:,}' for t, n in meta['rows'].items())} rows")
    print(f"bytes on disk: lake {meta['lake_bytes'] / 1e6:.1f} MB (Parquet + Delta log of these "
          f"tables) vs PostgreSQL {meta['pg_bytes'] / 1e6:.1f} MB (heap + TOAST + indexes)")
    print(f"ready: medallion serve answers {meta['medallion_start_s']:.2f} s after start; "
          f"PostgreSQL initdb + start {meta['pg_start_s']:.1f} s + load/keys/ANALYZE "
          f"{meta['pg_load_s']:.1f} s")
    print(f"load average (1 min): {meta['load_start']:.2f} at start, {meta['load_end']:.2f} at end\n")

    print("| query | clients | medallion p50 | medallion p99 | PostgreSQL p50 | PostgreSQL p99 "
          "| p50 ratio | p99 ratio | medallion q/s | PostgreSQL q/s | errors m/pg |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    pairs = list(zip(phases[0::2], phases[1::2]))  # (medallion, PostgreSQL) per --clients value
    for m, g in pairs:
        clients = m["clients"]
        for name in m["queries"]:
            a, b = m["queries"][name], g["queries"][name]
            print(f"| {name} | {clients} | {a['p50_ms']:.2f} ms | {a['p99_ms']:.2f} ms | "
                  f"{b['p50_ms']:.2f} ms | {b['p99_ms']:.2f} ms | {ratio(a['p50_ms'], b['p50_ms'])} | "
                  f"{ratio(a['p99_ms'], b['p99_ms'])} | {a['qps']:.1f} | {b['qps']:.1f} | "
                  f"{a['errors']}/{b['errors']} |")
    print("\nratio = medallion / PostgreSQL (above 1: medallion slower)\n")

    print("| server | clients | q/s | errors | server CPU | CPU/query | client CPU "
          "| RSS before → peak → after | PSS before → peak → after | load 1 min |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- | --- |")
    for p in phases:
        pss = (f"{mb(p['pss_before'])} → {mb(p['pss_peak'])} → {mb(p['pss_after'])}"
               if p["server"] == "postgresql" else f"(VmHWM {mb(p['vmhwm'])})")
        print(f"| {p['server']} | {p['clients']} | {p['total_qps']:.1f} | {p['errors']} | "
              f"{p['server_cpu_s']:.1f} s | {p['server_cpu_ms_per_query']:.2f} ms | "
              f"{p['client_cpu_s']:.1f} s | {mb(p['rss_before'])} → {mb(p['rss_peak'])} → "
              f"{mb(p['rss_after'])} | {pss} | {p['load'][0]:.2f} → {p['load'][1]:.2f} |")
    print("\nPostgreSQL RSS is summed over its processes (shared buffers counted once per "
          "backend); PSS shares them out.")
    for m, g in pairs:
        print(f"{m['clients']} client(s): throughput medallion/PostgreSQL "
              f"{m['total_qps'] / g['total_qps']:.2f}x, server CPU per query "
              f"{ratio(m['server_cpu_ms_per_query'], g['server_cpu_ms_per_query'])}")
    failures = [(p, n, q) for p in phases for n, q in p["queries"].items() if q["errors"]]
    if failures:
        print("\nERRORS:")
        for p, n, q in failures:
            print(f"  {p['server']} {n} at {p['clients']} client(s): {q['errors']} failed")
            for s in q["error_samples"]:
                print(f"    {s}")
    for p in phases:
        if not p["alive"]:
            print(f"\n{p['server']} DIED during the {p['clients']}-client phase")


def interrupted(signum, frame):
    raise KeyboardInterrupt


def ratio(a, b):
    if not b or math.isnan(a) or math.isnan(b):
        return "-"
    return f"{a / b:.2f}x"


# ---------------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", help="a medallion binary (default: release, else debug, with `serve`)")
    ap.add_argument("--scale", type=int, default=20, help="demo data volume (medallion demo --scale)")
    ap.add_argument("--seconds", type=float, default=20.0, help="length of each phase")
    ap.add_argument("--clients", default="1,50", help="concurrent clients per phase, comma-separated")
    ap.add_argument("--queries", default=",".join(QUERIES),
                    help="the dashboard's queries to run, comma-separated (default: all)")
    ap.add_argument("--prepare", choices=["auto", "never"], default="auto",
                    help="auto: psycopg prepares a query after 5 executions; never: no prepared "
                         "statements")
    ap.add_argument("--serve-arg", action="append", default=[],
                    help="extra argument for medallion serve (repeatable), e.g. --serve-arg=--partitions=1")
    ap.add_argument("--pg-work-mem", default=PG_WORK_MEM,
                    help="PostgreSQL work_mem (its default, 4MB, spills the silver sorts to disk)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--keep", action="store_true", help="keep the work folder (lake, PostgreSQL data)")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    args = ap.parse_args()
    clients = [int(c) for c in args.clients.split(",") if c]
    names = [n for n in args.queries.split(",") if n]
    unknown = [n for n in names if n not in QUERIES]
    if unknown or not names:
        ap.error(f"unknown queries {unknown}; known: {', '.join(QUERIES)}")

    ensure_psycopg()
    import psycopg  # noqa: PLC0415 - only importable after ensure_psycopg

    bin_, build = medallion_bin(args)
    bindir = postgres_bindir()
    # SIGTERM as Ctrl-C, so that the finally below stops both servers.
    signal.signal(signal.SIGTERM, interrupted)

    load_start = loadavg()
    work = Path(tempfile.mkdtemp(prefix="medallion-serve-bench-"))
    os.chmod(work, 0o755)  # PostgreSQL's folder inside must be reachable by `postgres`
    med = pg = None
    try:
        log(f"load average {load_start:.2f}; work folder {work}")
        log(f"building the lake: medallion demo --scale {args.scale}")
        t0 = time.perf_counter()
        lake = work / "lake"
        subprocess.run([str(bin_), "demo", "--dir", str(work / "retail"), "--lake", str(lake),
                        "--scale", str(args.scale), "--engine", "native"],
                       check=True, stdout=subprocess.DEVNULL)
        log(f"  built in {time.perf_counter() - t0:.1f} s")
        dashboard = Dashboard(lake, args.seed, names)

        pg = Postgres(bindir, work, max(clients) + 10, args.pg_work_mem)
        log(f"starting PostgreSQL ({bindir}) on port {pg.port}")
        pg_start = pg.start(psycopg)
        rows, pg_bytes, pg_version, pg_load = pg.load(psycopg, lake)
        log(f"  loaded {sum(rows.values()):,} rows in {pg_load:.1f} s")

        med = MedallionServe(bin_, lake, work, args.serve_arg)
        log(f"starting medallion serve on port {med.port}")
        med_start = med.start(psycopg)

        log("checking that both servers give the same answers")
        check_answers(psycopg, dashboard, med, pg)

        phases = []
        for n in clients:
            for server in (med, pg):
                if not server.alive():
                    raise SystemExit(f"{server.name} is not running")
                # One warm-up pass of the dashboard, unmeasured.
                with psycopg.connect(**server.dsn()) as c:
                    for name in dashboard.names:
                        try:
                            c.execute(QUERIES[name][1],
                                      dashboard.params(name, random.Random(0))).fetchall()
                        except psycopg.Error as e:
                            raise SystemExit(f"{server.name}: warm-up query {name} failed: {e}") from e
                phases.append(run_phase(psycopg, server, dashboard, n, args.seconds, args.prepare,
                                        args.seed))
        load_end = loadavg()
        meta = {
            "medallion": str(bin_), "medallion_build": build, "pg_version": pg_version,
            "scale": args.scale, "seconds": args.seconds, "prepare": args.prepare,
            "psycopg": psycopg.__version__, "pg_settings": pg.settings, "rows": rows,
            "lake_bytes": sum(dir_bytes(lake / t.replace(".", "/")) for t in PG_TABLES),
            "pg_bytes": pg_bytes, "medallion_start_s": med_start, "pg_start_s": pg_start,
            "pg_load_s": pg_load, "load_start": load_start, "load_end": load_end,
            "cores": os.cpu_count(), "serve_args": args.serve_arg,
        }
        dead = [s for s in (med, pg) if not s.alive()]
        for s in dead:
            log(f"{s.name} is no longer running")
        if args.json:
            print(json.dumps({"meta": meta, "phases": phases}, indent=2, default=str))
        else:
            print_report(meta, phases)
        if dead or any(p["errors"] for p in phases):
            sys.exit(1)
    except KeyboardInterrupt:
        log("interrupted")
        sys.exit(130)
    except SystemExit as e:
        if e.code not in (0, None) and med and med.proc:
            log(f"medallion serve {'running' if med.alive() else 'EXITED'}; its stderr (last lines):\n"
                + tail(med.stderr_path))
        if e.code not in (0, None) and pg and pg.proc:
            log("PostgreSQL log (last lines):\n" + tail(pg.log_path))
        raise
    finally:
        if med:
            med.stop()
        if pg:
            pg.stop()
        if args.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
