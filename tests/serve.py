"""`medallion serve` gives real PostgreSQL clients the answers `medallion query` gives.

Usage: python3 tests/serve.py MEDALLION_BIN [--scale 0.3] [--engine native] [--load-seconds 30]
                              [--keep DIR]

Builds the retail demo lake (`medallion demo --scale 0.3`), serves it with `medallion serve` on a
free loopback port (stopped at the end, also on failure) and asks it with the clients BI tools
are built on. Every answer is compared with `medallion query --lake LAKE --format json` of the
same SQL (the server's `gold.x` is `query --lake`'s bare `x`, `quarantine.x` its `x_quarantine`):
integers exactly, decimals and floats to 1e-9 relative, timestamps as instants (a timestamptz must
come back with its zone, a timestamp without one).

  catalog    a pipeline run while serving adds bronze.kiosk_sales (one column of each Delta type:
             bigint, decimal(10,2), boolean, timestamp, date, double, string, int; a row of NULLs);
             it is queryable within 3 s (the server lists the lake every 2 s).
  psql       `\\dt gold.*` lists exactly the gold tables, `\\dn` the four layers, `\\d` the PG type
             of each Delta type; dashboard queries (GROUP BY, WHERE day BETWEEN, ORDER BY, LIMIT,
             a silver join, a quarantine table) as `--csv`.
  psycopg    psycopg 3: simple and extended protocol, text and binary results, server-side
             prepared statements with parameters of each type; the OID and Python type of each
             column; INSERT/UPDATE/DELETE/CREATE/DROP/TRUNCATE refused with SQLSTATE 25006 (also
             prepared, also inside a transaction) and the same connection then answers; the lake
             unchanged; an unknown column is an error and the connection answers; a nested
             transaction (SAVEPOINT); a named server-side cursor (in a child process: a bad
             answer crashed psycopg's C code).
  sqlalchemy SQLAlchemy 2 with postgresql+psycopg: connecting, inspect().get_table_names,
             get_columns, get_schema_names, reflecting a Table; pandas.read_sql into a DataFrame.
  jdbc       pgjdbc (Debian's libpostgresql-jdbc-java) driven by tests/serve/JdbcCheck.java:
             getTables, getColumns, PreparedStatements run past the prepare threshold, a refused
             INSERT.
  odbc       psqlODBC (Debian's odbc-postgresql) through pyodbc without a DSN, and through
             unixODBC's isql with a DSN in a temporary odbc.ini.
  freshness  new source data (`demo --more` into a scratch lake), then `medallion run` into the
             served lake while two connections keep counting: every count is the old or the new
             one, and the first query after the run equals `medallion query`.
  load       50 connections running dashboard queries for --load-seconds: no errors, every
             answer right; latency p50/p99 and the server's RSS before and after.
  auth       --bind 0.0.0.0 without a password exits non-zero naming the password; with
             --password-file on 127.0.0.1 the right password (user medallion) is let in, a wrong
             one, none or another user is refused; stderr logs the refusal without the password.
  timeout    --query-timeout 2s: a query running longer gets SQLSTATE 57014 on time, naming the
             limit and the flag, over the simple and the extended protocol (prepared, with a
             parameter) and while rows stream (libpq single-row mode, rows already received); the
             server's CPU then drops to idle and another connection answers at once; the same
             connection answers; SET statement_timeout lowers the limit for its connection only.
  tls        --tls-cert/--tls-key with a self-signed certificate made by openssl: HTTPS on the HTTP
             port (GET / and a Range GET of a lake file, verified against the certificate), a
             plain-HTTP request told to use https, psycopg with sslmode=verify-full; a key that is
             not PKCS#8 stops the server at start instead of serving unencrypted.
  limits     MEDALLION_SERVE_PASSWORD, --max-connections 3 (a 4th is turned away, a freed slot is
             reused), --max-memory 4MiB (a query needing more fails, the connection answers, the
             same query passes on the default server), and no client's SET lifts the limit or
             changes another client's session.

A check the server fails for want of a feature of datafusion-postgres/DataFusion rather than a
bug prints `SKIP … known limitation` with the reason (and `ok` once it passes); a client that
shows a bug gets FAIL. `medallion` runs with --engine native by default: the server executes
natively, and the guest module may need minutes to compile after a build.

Needs psql (postgresql-client), openssl, java 17 with /usr/share/java/postgresql.jar
(libpostgresql-jdbc-java), odbc-postgresql and unixodbc, and in Python psycopg[binary],
sqlalchemy, pandas and pyodbc (besides what tests/s3_lake.py, whose helpers this imports, needs).
Prints one line per check; exits 1 if any check failed, and then keeps the work folder.
"""

import argparse
import csv
import glob
import http.client
import io
import json
import logging
import math
import os
import random
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from decimal import Decimal

import pandas as pd
import psycopg
import pyodbc
import sqlalchemy as sa

from delta_lifecycle import replay, schema_types
from s3_lake import Medallion, Report, free_port, local_tables

HERE = os.path.dirname(os.path.abspath(__file__))
JDBC_JAR = "/usr/share/java/postgresql.jar"
JDBC_CHECK = os.path.join(HERE, "serve", "JdbcCheck.java")
ODBC_DRIVER = "PostgreSQL Unicode"
LAYERS = ("bronze", "silver", "gold", "quarantine")
USER = "medallion"
PASSWORD = "serve-test-pw-5c81e2"
WRONG_PASSWORD = "not-the-pw-0d9b44"
ENV_PASSWORD = "serve-env-pw-a7730f"
REFRESH_PROMISE = 2.0   # seconds `serve --help` promises for a new table to appear
REFRESH_SLACK = 1.0     # for a busy machine
CLIENT_TIMEOUT = 60     # seconds for one psql/java/isql run
WATCHDOG_SECONDS = 300  # the whole test; a hung server must not hang CI
LOAD_CONNECTIONS = 50
LOAD_PEAK_RSS_MIB = 1024  # the server's peak RSS under load must stay below this
MAX_CONNECTIONS = 3
SMALL_MEMORY = "4MiB"
# Needs ~10 MB held at once in one aggregate state (an array_agg without GROUP BY cannot spill),
# whatever the lake holds.
MEMORY_HOG = ("SELECT array_length(array_agg(v)) AS n FROM "
              "(SELECT md5(CAST(value AS VARCHAR)) AS v FROM range(300000)) t")
# Needs ~10 MB for its hash table too, but a grouped aggregate spills to disk past its share.
SPILLING = ("SELECT count(DISTINCT v) AS n FROM "
            "(SELECT md5(CAST(value AS VARCHAR)) AS v FROM range(300000)) t")

QUERY_TIMEOUT = 2  # seconds: the timeout stage's --query-timeout
# Queries that would run for hours. DataFusion yields between batches of each, so they stop on
# time (a cross join multiplying one batch into billions of rows does not yield, and may overrun).
SLOW_AGGREGATE = ("SELECT count(DISTINCT value % 1000003) AS n "
                  "FROM generate_series(1, 100000000000)")
SLOW_ROWS = "SELECT value AS v FROM generate_series(1, 100000000000)"
IDLE_CPU = 0.3  # share of a core a server with no query running stays below

# Delta type → (psql's \d type, the type's name in pg_type / JDBC, java.sql.Types, psycopg OID).
PG_TYPES = {
    "string": ("text", "text", 12, 25),
    "long": ("bigint", "int8", -5, 20),
    "integer": ("integer", "int4", 4, 23),
    "short": ("smallint", "int2", 5, 21),
    "double": ("double precision", "float8", 8, 701),
    "float": ("real", "float4", 7, 700),
    "boolean": ("boolean", "bool", -7, 16),
    "date": ("date", "date", 91, 1082),
    "timestamp": ("timestamp with time zone", "timestamptz", 93, 1184),
    "timestamp_ntz": ("timestamp without time zone", "timestamp", 93, 1114),
    "binary": ("bytea", "bytea", -2, 17),
}
DECIMAL = re.compile(r"decimal\((\d+),\s*(\d+)\)")

# A table added while the server runs: one column of each Delta type a spec declares.
KIOSK_SPEC = """[pipeline]
name = "kiosk"

[bronze.kiosk_sales]
path = "kiosk.csv"
schema = { sale_id = "bigint", amount = "decimal(10,2)", paid = "boolean", sold_at = "timestamp", \
day = "date", ratio = "double", note = "string", qty = "int" }
"""
KIOSK_CSV = """sale_id,amount,paid,sold_at,day,ratio,note,qty
1,12.34,true,2026-01-02T10:11:12Z,2026-01-02,0.125,first,3
2,99999999.99,false,2026-01-02 23:59:59.123456,2026-01-02,-1.5e10,"comma, quoted",-7
3,-0.01,true,2026-01-03T00:00:00Z,2026-01-03,,ünïcödé ✓,0
4,,,,,,,
"""
KIOSK_QUERY = ("SELECT sale_id, amount, paid, sold_at, day, ratio, note, qty, "
               "CAST(sold_at AS TIMESTAMP) AS naive_ts, amount * 2 AS doubled "
               "FROM bronze.kiosk_sales ORDER BY sale_id")
# Python types psycopg gives each column of KIOSK_QUERY (NULLs aside).
KIOSK_PY = {"sale_id": int, "amount": Decimal, "paid": bool, "sold_at": "aware", "day": date,
            "ratio": float, "note": str, "qty": int, "naive_ts": "naive", "doubled": Decimal}
KIOSK_COMPUTED_OIDS = {"naive_ts": 1114, "doubled": 1700}
WRITES = [
    "INSERT INTO gold.sales_by_region_day VALUES ('Nowhere', DATE '2026-01-01', 1, 1, 1.0)",
    "UPDATE gold.sales_by_region_day SET revenue = 0",
    "DELETE FROM gold.sales_by_region_day",
    "CREATE TABLE gold.scratch (a BIGINT)",
    "CREATE TABLE public.scratch AS SELECT * FROM gold.sales_by_region_day",
    "DROP TABLE gold.sales_by_region_day",
    "TRUNCATE gold.sales_by_region_day",
]


# ── comparing a client's rows with `medallion query` ─────────────────────────────────────────

ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
ISO_TIME = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}(:?\d{2})?)?")


def canon(v, naive=False):
    """Dates and timestamps as Python values, whether a client parsed them or printed them;
    aware timestamps in UTC (without the zone if `naive`: ODBC has no zones)."""
    if isinstance(v, str):
        if ISO_DATE.fullmatch(v):
            return date.fromisoformat(v)
        if not ISO_TIME.fullmatch(v):
            return v
        v = datetime.fromisoformat(v)
    if isinstance(v, datetime) and v.tzinfo is not None:
        v = v.astimezone(timezone.utc)
        return v.replace(tzinfo=None) if naive else v
    return v


def truth(v):
    if isinstance(v, str):
        return {"t": True, "true": True, "1": True, "f": False, "false": False, "0": False}.get(
            v.lower(), v)
    return v


def same(got, want, naive=False):
    """Whether a client's value is `medallion query`'s: numbers to 1e-9 relative (integers
    exactly), timestamps as instants, the rest as equal values."""
    got, want = canon(got, naive), canon(want, naive)
    if got is None or want is None:
        return got is None and want is None
    if isinstance(want, bool):
        return truth(got) is want
    if isinstance(want, (int, float, Decimal)):
        if isinstance(got, str):
            try:
                got = Decimal(got)
            except ArithmeticError:
                return False
        if isinstance(got, bool) or not isinstance(got, (int, float, Decimal)):
            return False
        if isinstance(want, int) and isinstance(got, int):
            return got == want
        return math.isclose(float(got), float(want), rel_tol=1e-9, abs_tol=1e-12)
    return type(got) is type(want) and got == want


def differ(columns, got, want, naive=False):
    """'' if a client's rows (sequences in `columns` order) are `medallion query`'s (dicts, as
    its JSON leaves NULLs out), else where they first differ."""
    if len(got) != len(want):
        return (f"{len(got)} rows, medallion query {len(want)}: first rows {list(got[:2])} vs "
                f"{want[:2]}")
    for i, (g, w) in enumerate(zip(got, want)):
        if len(g) != len(columns):
            return f"row {i} has {len(g)} values for {len(columns)} columns"
        for col, gv in zip(columns, g):
            if not same(gv, w.get(col), naive):
                return f"row {i} column {col}: got {gv!r}, medallion query {w.get(col)!r}"
    return ""


def bare(sql):
    """The server's schema-qualified names as `medallion query --lake` registers them."""
    sql = re.sub(r"\bquarantine\.(\w+)", r"\1_quarantine", sql)
    return re.sub(r"\b(?:bronze|silver|gold)\.(\w+)", r"\1", sql)


def dashboard(days):
    """(label, SQL) of the queries a BI dashboard of the demo sends."""
    first, last = days[1], days[-1]
    return [
        ("revenue by region",
         "SELECT region, sum(orders) AS orders, sum(units) AS units, sum(revenue) AS revenue "
         "FROM gold.sales_by_region_day GROUP BY region ORDER BY revenue DESC, region"),
        (f"daily totals {first}..{last}",
         "SELECT day, count(*) AS regions, sum(orders) AS orders, "
         "round(sum(revenue), 2) AS revenue "
         f"FROM gold.sales_by_region_day WHERE day BETWEEN DATE '{first}' AND DATE '{last}' "
         "GROUP BY day ORDER BY day"),
        ("top 5 region-days",
         "SELECT region, day, revenue, orders FROM gold.sales_by_region_day "
         "ORDER BY revenue DESC, region, day LIMIT 5"),
        ("customer segments",
         "SELECT segment, count(*) AS customers, avg(monetary) AS avg_monetary, "
         "max(recency_days) AS max_recency FROM gold.customer_segments "
         "GROUP BY segment ORDER BY customers DESC, segment"),
        ("revenue by channel (silver join)",
         "SELECT o.channel, count(DISTINCT o.order_id) AS orders, sum(l.amount) AS amount "
         "FROM silver.orders o JOIN silver.order_lines l ON l.order_id = o.order_id "
         "GROUP BY o.channel ORDER BY o.channel"),
        ("quarantined orders by reason",
         "SELECT _quarantine_reason AS reason, count(*) AS n FROM quarantine.orders "
         "GROUP BY _quarantine_reason ORDER BY n DESC, reason"),
        ("low stock by warehouse",
         "SELECT warehouse, count(*) AS products, sum(shortfall) AS shortfall "
         "FROM gold.low_stock_alerts GROUP BY warehouse ORDER BY warehouse"),
    ]


# ── the server ───────────────────────────────────────────────────────────────────────────────


class PgServer:
    """One `medallion serve` on a free loopback port; its stderr goes to a file in `work`."""

    def __init__(self, binary, lake, work, name, *args, env, http=False):
        self.name = name
        self.port = free_port()
        self.err_path = os.path.join(work, f"{name}.stderr")
        # HTTP off unless asked for: several servers run at once here, and its default port is
        # fixed (8080); tests/js/serve_web.test.mjs tests the HTTP side (over plain HTTP).
        self.http_port = free_port() if http else 0
        self.argv = [binary, "serve", "--lake", lake, "--pg-port", str(self.port),
                     "--http-port", str(self.http_port), *map(str, args)]
        with open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(self.argv, stdout=err, stderr=subprocess.STDOUT, env=env)

    def ready(self, timeout=30):
        """Waits until the port accepts connections: False if the server exited or time ran out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return True
            except OSError:
                time.sleep(0.05)
        return False

    def stderr(self):
        with open(self.err_path, encoding="utf-8", errors="replace") as f:
            return f.read()

    def tail(self, lines=8):
        return " | ".join(self.stderr().strip().splitlines()[-lines:])

    def memory(self):
        """{VmRSS, VmHWM} in kB, from /proc."""
        try:
            with open(f"/proc/{self.proc.pid}/status") as f:
                return {k: int(v.split()[0]) for k, v in (ln.split(":", 1) for ln in f)
                        if k in ("VmRSS", "VmHWM")}
        except OSError:
            return {}

    def cpu_seconds(self):
        """User + system CPU time the server has used so far, from /proc."""
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def connect(port, password=None, user=USER, **kw):
    kw.setdefault("autocommit", True)
    return psycopg.connect(host="127.0.0.1", port=port, dbname="lake", user=user,
                           password=password, connect_timeout=10, **kw)


def conninfo(port):
    return f"host=127.0.0.1 port={port} dbname=lake user={USER} connect_timeout=10"


def client_env(**extra):
    """This environment without PG*/ODBC* settings that would redirect a client."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PG", "ODBC")) and k != "MEDALLION_SERVE_PASSWORD"}
    env.update(PGCONNECT_TIMEOUT="10", **extra)
    return env


# ── the report ───────────────────────────────────────────────────────────────────────────────


class ServeReport(Report):
    """tests/s3_lake.py's report, and checks the server is known to fail for want of a feature
    of the libraries under it: those print SKIP (not counted as failed) until they pass."""

    def __init__(self):
        super().__init__()
        self.limitations = []

    def known(self, ok, what, detail, reason):
        if ok:
            return self.check(True, what, detail + " (no longer a known limitation)")
        self.limitations.append(what)
        print(f"SKIP {what} — known limitation: {reason}\n       {detail}", flush=True)
        return False


@dataclass
class Ctx:
    rep: ServeReport
    med: Medallion
    binary: str
    engine: str
    work: str
    lake: str
    server: PgServer
    env: dict
    scale: str
    days: list = field(default_factory=list)
    servers: list = field(default_factory=list)

    def query(self, sql):
        """`medallion query --lake` of the server's SQL: (rows as dicts, None) or (None, error)."""
        done = self.med("query", "query", "--lake", self.lake, "--engine", self.engine,
                        "--format", "json", bare(sql))
        if not done.ok:
            return None, done.said()
        return json.loads(done.out or "[]", parse_float=Decimal), None

    def psql(self, command):
        """psql's --csv output of one command (SQL or a backslash command): (rows, the first
        being the header, None) or (None, error). NULL is None."""
        argv = ["psql", "-X", "-q", "--csv", "-v", "ON_ERROR_STOP=1", "-P", "null=∅",
                "-h", "127.0.0.1", "-p", str(self.server.port), "-U", USER, "-d", "lake",
                "-c", command]
        try:
            p = subprocess.run(argv, capture_output=True, text=True, env=client_env(),
                               timeout=CLIENT_TIMEOUT)
        except subprocess.TimeoutExpired:
            return None, f"psql gave no answer in {CLIENT_TIMEOUT} s"
        if p.returncode != 0:
            return None, f"psql exit {p.returncode}: {p.stderr.strip()}"
        rows = [[None if v == "∅" else v for v in r] for r in csv.reader(io.StringIO(p.stdout))]
        return rows, None


# ── stages ───────────────────────────────────────────────────────────────────────────────────


def stage_catalog(c):
    """A table a pipeline adds while the server runs becomes queryable."""
    kiosk = os.path.join(c.work, "kiosk")
    os.makedirs(kiosk, exist_ok=True)
    with open(os.path.join(kiosk, "pipeline.toml"), "w") as f:
        f.write(KIOSK_SPEC)
    with open(os.path.join(kiosk, "kiosk.csv"), "w") as f:
        f.write(KIOSK_CSV)
    done = c.med("kiosk run", "run", os.path.join(kiosk, "pipeline.toml"), "--lake", c.lake,
                 "--engine", c.engine)
    if not c.rep.check(done.ok, "[catalog] a pipeline run adds bronze.kiosk_sales while serving",
                       done.said()):
        return False
    started, seen, last = time.monotonic(), None, ""
    with connect(c.server.port) as conn:
        while time.monotonic() - started < 10:
            try:
                seen = conn.execute("SELECT count(*) FROM bronze.kiosk_sales").fetchone()[0]
                break
            except psycopg.Error as e:
                last = str(e).strip()
                time.sleep(0.1)
    took = time.monotonic() - started
    return c.rep.check(seen == 4 and took <= REFRESH_PROMISE + REFRESH_SLACK,
                       f"[catalog] the new table is queryable within "
                       f"{REFRESH_PROMISE + REFRESH_SLACK:.0f} s",
                       f"{seen} rows after {took:.1f} s" if seen is not None else
                       f"not after {took:.0f} s: {last}")


def delta_columns(c, rel):
    """(column, Delta type) of a lake table, from its log."""
    return list(schema_types(replay(os.path.join(c.lake, rel)).metadata).items())


def psql_type(delta):
    m = DECIMAL.fullmatch(delta)
    return f"numeric({m[1]},{m[2]})" if m else PG_TYPES.get(delta, (f"? {delta}",))[0]


def stage_psql(c):
    rep = c.rep
    if not shutil.which("psql"):
        rep.check(False, "[psql] psql is installed", "apt-get install postgresql-client")
        return
    gold = sorted(t.split("/")[1] for t in local_tables(c.lake) if t.startswith("gold/"))
    rows, err = c.psql("\\dt gold.*")
    got = sorted((r[0], r[1], r[2]) for r in rows[1:]) if rows else None
    rep.check(got == [("gold", t, "table") for t in gold],
              "[psql] \\dt gold.* lists exactly the gold tables",
              err or f"got {got}, the lake has {gold}")
    rows, err = c.psql("\\dn")
    got = sorted(r[0] for r in rows[1:]) if rows else None
    rep.check(got is not None and set(LAYERS) <= set(got), "[psql] \\dn lists the four layers",
              err or f"{got}")

    for rel in ("gold/sales_by_region_day", "bronze/kiosk_sales"):
        name = rel.replace("/", ".")
        delta = delta_columns(c, rel)
        want = [(col, psql_type(t)) for col, t in delta]
        rows, err = c.psql(f"\\d {name}")
        got = [(r[0], r[1]) for r in rows[1:]] if rows else None
        is_decimal = [bool(DECIMAL.fullmatch(t)) for _, t in delta]
        # A decimal's precision and scale are the known limitation below; its name is checked here.
        ok = got is not None and len(got) == len(want) and all(
            (w[0], w[1].split("(")[0]) == (g[0], g[1].split("(")[0]) if dec else w == g
            for w, g, dec in zip(want, got, is_decimal))
        rep.check(ok, f"[psql] \\d {name}: each column with its PG type",
                  err or ", ".join(f"{col} {typ}" for col, typ in got)
                  + ("" if ok else f"; from the Delta schema: {want}"))
        decimals = [(w, g) for w, g, dec in zip(want, got or [], is_decimal) if dec]
        if decimals:
            rep.known(all(w == g for w, g in decimals),
                      f"[psql] \\d {name}: decimal(p,s) columns as numeric(p,s)",
                      "; ".join(f"{w[0]}: got {g[1]}, want {w[1]}" for w, g in decimals),
                      "pg_attribute.atttypmod is -1 for every column, so precision and scale "
                      "are lost (also JDBC COLUMN_SIZE/DECIMAL_DIGITS 0, psycopg precision None)")

    for label, sql in dashboard(c.days):
        want, err = c.query(sql)
        rows, perr = c.psql(sql)
        if err or perr:
            rep.check(False, f"[psql] {label}", err or perr)
            continue
        rep.check(not differ(rows[0], rows[1:], want), f"[psql] {label}",
                  differ(rows[0], rows[1:], want) or f"{len(want)} rows as medallion query")

    sql = "SELECT region, day, orders FROM gold.sales_by_region_day ORDER BY region, day LIMIT 3"
    want, _ = c.query(sql)
    rows, err = c.psql(f"\\copy ({sql}) TO STDOUT WITH (FORMAT csv, HEADER)")
    rep.known(rows is not None and not differ(rows[0], rows[1:], want or []),
              "[psql] \\copy (SELECT …) TO STDOUT exports rows",
              err or differ(rows[0], rows[1:], want or []),
              "COPY … TO STDOUT is a read, but the server refuses every COPY as a write (25006, "
              "'cannot execute COPY (SELECT') and datafusion-postgres has no CopyOut")


def stage_psycopg(c):
    rep, port = c.rep, c.server.port
    conn = connect(port)
    try:
        _psycopg_reads(c, conn)
        _psycopg_writes(c, conn)
        _psycopg_errors(c, conn)
    finally:
        conn.close()
    _psycopg_transactions(c)
    _psycopg_named_cursor(c)


def _psycopg_reads(c, conn):
    rep = c.rep
    label, sql = dashboard(c.days)[0]
    want, err = c.query(sql)
    cur = conn.execute(sql)
    got = cur.fetchall()
    cols = [d.name for d in cur.description]
    rep.check(not err and not differ(cols, got, want), f"[psycopg] simple query: {label}",
              err or differ(cols, got, want) or f"{len(got)} rows")

    want_all, err = c.query("SELECT * FROM gold.sales_by_region_day ORDER BY region, day")
    regions = sorted({r["region"] for r in want_all or []})
    bad = []
    for region in regions:
        sql = ("SELECT day, orders, units, revenue FROM gold.sales_by_region_day "
               "WHERE region = %s ORDER BY day")
        for binary in (False, True):
            cur = conn.cursor(binary=binary)
            cur.execute(sql, [region], prepare=True)
            want = [r for r in want_all if r["region"] == region]
            d = differ([x.name for x in cur.description], cur.fetchall(), want)
            if d:
                bad.append(f"{region} binary={binary}: {d}")
    rep.check(bool(regions) and not bad and not err,
              "[psycopg] WHERE region = %s, server-side prepared (prepare=True), text and binary",
              err or "; ".join(bad) or f"{len(regions)} regions × 2 formats")

    first, last = c.days[1], c.days[-1]
    params = [
        ("date", "day BETWEEN %s AND %s", [date.fromisoformat(first), date.fromisoformat(last)],
         f"day BETWEEN DATE '{first}' AND DATE '{last}'"),
        ("int8", "orders > %s", [80], "orders > 80"),
        ("float8", "revenue > %s", [15000.5], "revenue > 15000.5"),
        ("numeric", "revenue < %s", [Decimal("15000.25")], "revenue < 15000.25"),
        ("bool", "(orders > 80) = %s", [True], "(orders > 80) = true"),
        ("text", "region <> %s", ["North"], "region <> 'North'"),
    ]
    bad = []
    for typ, where, values, literal in params:
        base = ("SELECT region, day, orders FROM gold.sales_by_region_day WHERE {} "
                "ORDER BY region, day")
        want, err = c.query(base.format(literal))
        try:
            cur = conn.execute(base.format(where), values, prepare=True)
            d = err or differ([x.name for x in cur.description], cur.fetchall(), want)
        except psycopg.Error as e:
            d = f"{type(e).__name__} {e.sqlstate}: {e}"
        if d:
            bad.append(f"{typ}: {d}")
    ts_sql = "SELECT count(*) AS n FROM silver.orders WHERE order_ts >= {}"
    want, err = c.query(ts_sql.format(f"TIMESTAMP '{last}T00:00:00Z'"))
    try:
        got = conn.execute(ts_sql.format("%s"), [datetime.fromisoformat(f"{last}T00:00:00+00:00")],
                           prepare=True).fetchall()
        d = err or differ(["n"], got, want)
    except psycopg.Error as e:
        d = f"{type(e).__name__} {e.sqlstate}: {e}"
    if d:
        bad.append(f"timestamptz: {d}")
    rep.check(not bad, "[psycopg] parameters of each type (date, int8, float8, numeric, bool, "
              "text, timestamptz), prepared", "; ".join(bad) or f"{len(params) + 1} queries")

    want, err = c.query(KIOSK_QUERY)
    delta = dict(delta_columns(c, "bronze/kiosk_sales"))
    for binary in (False, True):
        for prepare in (False, True):
            cur = conn.cursor(binary=binary)
            cur.execute(KIOSK_QUERY, prepare=prepare)
            rows = cur.fetchall()
            cols = [d.name for d in cur.description]
            oids = {d.name: d.type_code for d in cur.description}
            want_oids = {col: (KIOSK_COMPUTED_OIDS.get(col) or
                               (1700 if DECIMAL.fullmatch(delta.get(col, "")) else
                                PG_TYPES.get(delta.get(col), (0, 0, 0, None))[3]))
                         for col in cols}
            wrong_oid = {k: (oids[k], v) for k, v in want_oids.items() if oids[k] != v}
            wrong_py = [f"{col}: {type(v).__name__} {v!r}" for row in rows
                        for col, v in zip(cols, row) if v is not None and not py_type_ok(col, v)]
            d = err or differ(cols, rows, want)
            rep.check(not d and not wrong_oid and not wrong_py,
                      f"[psycopg] types round-trip (numeric, bool, timestamptz, date, float8, "
                      f"text, int4, int8, timestamp, NULLs), binary={binary} prepare={prepare}",
                      d or (f"OIDs (got, want): {wrong_oid}" if wrong_oid else "")
                      or "; ".join(wrong_py) or f"{len(rows)} rows as medallion query")
    precision = [(d.name, d.precision, d.scale) for d in conn.execute(
        "SELECT amount FROM bronze.kiosk_sales").description]
    c.rep.known(precision == [("amount", 10, 2)],
                "[psycopg] cursor.description of a decimal(10,2) column has precision 10, scale 2",
                f"got {precision}", "the server sends typmod -1 for numeric columns")


def py_type_ok(col, v):
    want = KIOSK_PY[col]
    if want == "aware":
        return isinstance(v, datetime) and v.tzinfo is not None
    if want == "naive":
        return isinstance(v, datetime) and v.tzinfo is None
    if want is date:
        return type(v) is date
    if want is int:
        return type(v) is int
    return isinstance(v, want)


def lake_log_files(lake):
    out = []
    for root, _, files in os.walk(lake):
        if os.path.basename(root) == "_delta_log":
            out += [os.path.join(root, f) for f in files]
    return sorted(out)


def _psycopg_writes(c, conn):
    rep = c.rep
    before = lake_log_files(c.lake)
    count = "SELECT count(*) AS n FROM gold.sales_by_region_day"
    want, _ = c.query(count)
    for sql in WRITES:
        for prepare in (False, True):
            state, msg = None, ""
            try:
                conn.execute(sql, prepare=prepare)
                msg = "no error: the statement ran"
            except psycopg.Error as e:
                state, msg = e.sqlstate, str(e).strip()
            try:
                after = conn.execute(count).fetchall()
                answers = not differ(["n"], after, want)
            except psycopg.Error as e:
                after, answers = str(e), False
            rep.check(state == "25006" and answers,
                      f"[psycopg] {sql.split(' (')[0][:40]}… refused with 25006"
                      f"{' (prepared)' if prepare else ''}, then the connection answers",
                      f"{state}: {msg[:100]}; then count(*) = {after}")
    tx = connect(c.server.port, autocommit=False)
    try:
        try:
            tx.execute(WRITES[0])
            state = "no error"
        except psycopg.Error as e:
            state = e.sqlstate
        tx.rollback()
        got = tx.execute(count).fetchall()
        tx.commit()
        rep.check(state == "25006" and not differ(["n"], got, want),
                  "[psycopg] in a transaction: INSERT refused (25006), ROLLBACK, then a SELECT",
                  f"{state}; then {got}")
    except psycopg.Error as e:
        rep.check(False, "[psycopg] in a transaction: INSERT refused (25006), ROLLBACK, "
                  "then a SELECT", f"{type(e).__name__} {e.sqlstate}: {e}")
    finally:
        tx.close()
    after = lake_log_files(c.lake)
    rep.check(after == before, "[psycopg] the refused writes left the lake's logs as they were",
              f"{len(before)} log files before, {len(after)} after")


def _psycopg_errors(c, conn):
    rep = c.rep
    bad = [("unknown column", "SELECT no_such_column FROM gold.sales_by_region_day", "42703"),
           ("unknown table", "SELECT * FROM gold.no_such_table", "42P01"),
           ("syntax error", "SELEC region FROM gold.sales_by_region_day", "42601")]
    states = []
    for label, sql, pg_state in bad:
        try:
            conn.execute(sql)
            err = None
        except psycopg.Error as e:
            err = e
        try:
            answers = conn.execute("SELECT count(*) FROM gold.customer_segments").fetchone()[0]
        except psycopg.Error as e:
            answers = f"{type(e).__name__}: {e}"
        rep.check(err is not None and isinstance(answers, int),
                  f"[psycopg] {label}: an error, then the connection answers",
                  f"{err.sqlstate if err else 'no error'}: {str(err).strip()[:100]}; "
                  f"then count(*) = {answers}")
        states.append((label, err.sqlstate if err else None, pg_state))
    c.rep.known(all(got == want for _, got, want in states),
                "[psycopg] errors carry PostgreSQL's SQLSTATE (42703, 42P01, 42601)",
                ", ".join(f"{label}: {got} (PostgreSQL: {want})" for label, got, want in states),
                "datafusion-postgres reports every DataFusion error as XX000 (internal_error)")


def _psycopg_transactions(c):
    """psycopg's nested transaction blocks use SAVEPOINT; SQLAlchemy's psycopg dialect opens one
    when it connects."""
    conn = connect(c.server.port, autocommit=False)
    try:
        with conn.transaction():
            outer = conn.execute("SELECT count(*) FROM gold.sales_by_region_day").fetchone()[0]
            with conn.transaction():
                inner = conn.execute("SELECT count(*) FROM gold.customer_segments").fetchone()[0]
        c.rep.check(True, "[psycopg] a nested transaction (SAVEPOINT / RELEASE SAVEPOINT)",
                    f"counts {outer}, {inner}")
    except psycopg.Error as e:
        c.rep.check(False, "[psycopg] a nested transaction (SAVEPOINT / RELEASE SAVEPOINT)",
                    f"{type(e).__name__} {e.sqlstate}: {str(e).strip()}")
    finally:
        conn.close()


NAMED_CURSOR_CHILD = """
import json, sys, psycopg
conn = psycopg.connect(sys.argv[1])
with conn.cursor(name="dashboard") as cur:
    cur.execute(sys.argv[2])
    rows = cur.fetchmany(2)
    rows += cur.fetchall()
    print(json.dumps({"columns": [d.name for d in cur.description or []],
                      "rows": [[str(v) for v in r] for r in rows]}))
"""


def _psycopg_named_cursor(c):
    """A named cursor: DECLARE, then psycopg describes the portal and FETCHes. In a child
    process, as a wrong answer to the Describe crashes psycopg's C implementation."""
    sql = "SELECT region, day, orders FROM gold.sales_by_region_day ORDER BY region, day"
    want, err = c.query(sql)
    p = subprocess.run([sys.executable, "-c", NAMED_CURSOR_CHILD, conninfo(c.server.port), sql],
                       capture_output=True, text=True, timeout=CLIENT_TIMEOUT, env=client_env())
    if p.returncode != 0:
        how = (f"killed by {signal.Signals(-p.returncode).name}" if p.returncode < 0
               else f"exit {p.returncode}")
        last = (p.stderr.strip().splitlines() or [""])[-1]
        c.rep.known(False, "[psycopg] named (server-side) cursor: fetchmany, fetchall",
                    f"the client {how}: {last}",
                    "datafusion-postgres answers Describe Portal of a DECLAREd cursor with "
                    "NoData, so FETCH rows arrive without a row description (pure-Python "
                    "psycopg: IndexError in load_rows; the C build crashes); psql's "
                    "DECLARE/FETCH works")
        return
    got = json.loads(p.stdout)
    d = err or differ(got["columns"], got["rows"], want)
    c.rep.check(not d, "[psycopg] named (server-side) cursor: fetchmany, fetchall",
                d or f"{len(got['rows'])} rows")


def stage_sqlalchemy(c):
    rep = c.rep
    url = f"postgresql+psycopg://{USER}@127.0.0.1:{c.server.port}/lake"
    engine = sa.create_engine(url, connect_args={"connect_timeout": 10})
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1")).fetchall()
        rep.check(True, "[sqlalchemy] create_engine(postgresql+psycopg://…).connect()")
        note = ""
    except Exception as e:  # noqa: BLE001  (whatever the dialect raises is the finding)
        why = ""
        if "determine version" in str(e):
            why = (" — the dialect parses `SELECT pg_catalog.version()`, which here says "
                   "'Apache DataFusion …' instead of 'PostgreSQL N.N …'")
        elif "SAVEPOINT" in str(e):
            why = " — the dialect looks up the hstore type inside a SAVEPOINT"
        rep.known(False, "[sqlalchemy] create_engine(postgresql+psycopg://…).connect()",
                  f"{type(e).__name__}: {first_line(e)}{why}",
                  "SQLAlchemy's PostgreSQL dialect probes the catalog on connect with functions "
                  "DataFusion's pg_catalog does not have (to_regtype, then json_build_object "
                  "when reflecting); raw connections — pandas.read_sql below — work")
        engine.dispose()
        # So the checks below can still find what else is wrong: the version the dialect could
        # not parse given, and the hstore look-up (a SAVEPOINT) left out.
        engine = sa.create_engine(url, use_native_hstore=False,
                                  connect_args={"connect_timeout": 10})
        engine.dialect._get_server_version_info = lambda connection: (16, 6)
        note = " (connect worked around)"
    try:
        _sqlalchemy_checks(c, engine, note)
    finally:
        engine.dispose()


def first_line(e):
    return (str(e).strip().splitlines() or [""])[0][:300]


def _sqlalchemy_checks(c, engine, note):
    rep = c.rep
    gold = sorted(t.split("/")[1] for t in local_tables(c.lake) if t.startswith("gold/"))

    def attempt(what, fn, judge, known_reason=None):
        try:
            got = fn()
            ok, detail = judge(got)
        except Exception as e:  # noqa: BLE001
            ok, detail = False, f"{type(e).__name__}: {first_line(e)}"
        if known_reason:
            return rep.known(ok, what + note, detail, known_reason)
        return rep.check(ok, what + note, detail)

    insp = sa.inspect(engine)
    attempt("[sqlalchemy] inspect().get_table_names(schema='gold')",
            lambda: insp.get_table_names(schema="gold"),
            lambda got: (sorted(got) == gold, f"{sorted(got)}; the lake: {gold}"))
    want_cols = [(col, PG_TYPES[t][1] if t in PG_TYPES else t)
                 for col, t in delta_columns(c, "gold/sales_by_region_day")]
    sa_names = {"text": "TEXT", "int8": "BIGINT", "float8": "DOUBLE_PRECISION", "date": "DATE"}

    def columns_judge(got):
        have = [(x["name"], type(x["type"]).__name__) for x in got]
        want = [(col, sa_names.get(t, t)) for col, t in want_cols]
        return have == want, f"{have}" + ("" if have == want else f"; want {want}")
    attempt("[sqlalchemy] inspect().get_columns('sales_by_region_day', schema='gold')",
            lambda: insp.get_columns("sales_by_region_day", schema="gold"), columns_judge,
            known_reason="the dialect's column query builds json_build_object(...), which "
                         "DataFusion's pg_catalog does not provide")
    attempt("[sqlalchemy] inspect().get_schema_names() (BI tools' schema list)",
            insp.get_schema_names,
            lambda got: (set(LAYERS) <= set(got), f"{got}"),
            known_reason="DataFusion's LIKE takes no ESCAPE character but backslash; SQLAlchemy "
                         "filters pg_namespace with `NOT LIKE 'pg/_%' ESCAPE '/'`")
    attempt("[sqlalchemy] Table('sales_by_region_day', schema='gold', autoload_with=engine)",
            lambda: sa.Table("sales_by_region_day", sa.MetaData(), schema="gold",
                             autoload_with=engine),
            lambda t: ([col.name for col in t.columns] == [n for n, _ in want_cols],
                       f"{[col.name for col in t.columns]}"),
            known_reason="reflection also needs get_pk_constraint (fails: `unnest() can only be "
                         "applied to array` over pg_constraint.conkey), besides get_columns")

    label, sql = dashboard(c.days)[0]
    want, err = c.query(sql)

    def frame_judge(df):
        rows = list(df.itertuples(index=False, name=None))
        d = err or differ(list(df.columns), rows, want)
        dtypes = {k: str(v) for k, v in df.dtypes.items()}
        ok_types = (dtypes.get("orders") == "int64" and dtypes.get("revenue") == "float64")
        return not d and ok_types, d or f"{df.shape[0]} rows as medallion query; dtypes {dtypes}"
    attempt(f"[sqlalchemy] pandas.read_sql: {label}", lambda: pd.read_sql(sql, engine), frame_judge)

    want_k, err_k = c.query(KIOSK_QUERY)

    def kiosk_judge(df):
        rows = [[None if (isinstance(v, float) and math.isnan(v)) or v is pd.NaT else
                 (v.to_pydatetime() if isinstance(v, pd.Timestamp) else v) for v in r]
                for r in df.itertuples(index=False, name=None)]
        d = err_k or differ(list(df.columns), rows, want_k)
        return not d, d or f"{df.shape[0]} rows; dtypes {dict(df.dtypes.astype(str))}"
    attempt("[sqlalchemy] pandas.read_sql of every type (bronze.kiosk_sales)",
            lambda: pd.read_sql(sa.text(KIOSK_QUERY), engine), kiosk_judge)


def stage_jdbc(c):
    rep = c.rep
    java = shutil.which("java")
    if not java or not os.path.exists(JDBC_JAR):
        rep.check(False, "[jdbc] java and pgjdbc are installed",
                  f"java: {java}, {JDBC_JAR}: {os.path.exists(JDBC_JAR)} — apt-get install "
                  "openjdk-17-jdk-headless libpostgresql-jdbc-java")
        return
    first, last = c.days[1], c.days[-1]
    region_sql = ("SELECT day, orders, revenue FROM gold.sales_by_region_day WHERE region = ? "
                  "AND day BETWEEN ? AND ? ORDER BY day")
    kiosk_sql = KIOSK_QUERY.replace("ORDER BY", "WHERE sale_id >= ? ORDER BY")
    count_sql = ("SELECT count(*) AS n FROM silver.orders WHERE order_ts >= ? AND channel <> ? "
                 "AND (customer_id > ?) = ?")
    commands = [
        ["tables", "gold"],
        ["columns", "gold", "sales_by_region_day"],
        ["columns", "bronze", "kiosk_sales"],
        ["query", "region", "7", region_sql, "text:North", f"date:{first}", f"date:{last}"],
        ["query", "kiosk", "7", kiosk_sql, "int8:1"],
        ["query", "count", "7", count_sql, f"timestamptz:{last}T00:00:00Z", "text:web",
         "int8:100", "bool:true"],
        ["update", "insert", WRITES[0]],
    ]
    stdin = "\n".join("\t".join(cmd) for cmd in commands) + "\n"
    try:
        p = subprocess.run([java, "-cp", JDBC_JAR, JDBC_CHECK,
                            f"jdbc:postgresql://127.0.0.1:{c.server.port}/lake?connectTimeout=10"],
                           input=stdin, capture_output=True, text=True, timeout=CLIENT_TIMEOUT)
    except subprocess.TimeoutExpired:
        rep.check(False, "[jdbc] JdbcCheck runs", f"no answer in {CLIENT_TIMEOUT} s")
        return
    out = [json.loads(ln, parse_float=Decimal) for ln in p.stdout.splitlines() if ln.strip()]
    if not rep.check(p.returncode == 0 and len(out) == len(commands) + 1, "[jdbc] JdbcCheck runs",
                     f"{out[0] if out else ''}" if p.returncode == 0 else
                     f"exit {p.returncode}: {p.stderr.strip()[-600:]}"):
        return
    answers = dict(zip([tuple(cmd[:3]) for cmd in commands], out[1:]))

    def answer(*key):
        a = next(v for k, v in answers.items() if k[:len(key)] == key)
        return a, (f"{a.get('sqlstate')}: {a['error']}" if "error" in a else "")

    gold = sorted(t.split("/")[1] for t in local_tables(c.lake) if t.startswith("gold/"))
    a, err = answer("tables", "gold")
    got = sorted(tuple(r) for r in a.get("rows", []))
    rep.check(got == [("gold", t, "TABLE") for t in gold],
              "[jdbc] DatabaseMetaData.getTables(null, \"gold\", \"%\", null)", err or f"{got}")

    for rel in ("gold/sales_by_region_day", "bronze/kiosk_sales"):
        schema, table = rel.split("/")
        a, err = answer("columns", schema, table)
        got = [(r["name"], r["type_name"], r["data_type"]) for r in a.get("rows", [])]
        want, decimals = [], []
        for col, t in delta_columns(c, rel):
            m = DECIMAL.fullmatch(t)
            want.append((col, "numeric", 2) if m else (col, PG_TYPES[t][1], PG_TYPES[t][2]))
            if m:
                decimals.append((col, int(m[1]), int(m[2])))
        rep.check(got == want, f"[jdbc] getColumns(null, \"{schema}\", \"{table}\", \"%\"): "
                  "names, TYPE_NAME, DATA_TYPE", err or f"{got}" + ("" if got == want else
                                                                  f"; want {want}"))
        if decimals:
            sizes = {r["name"]: (r["size"], r["digits"]) for r in a.get("rows", [])}
            rep.known(all(sizes.get(col) == (p_, s) for col, p_, s in decimals),
                      f"[jdbc] getColumns {schema}.{table}: decimal COLUMN_SIZE, DECIMAL_DIGITS",
                      ", ".join(f"{col}: got {sizes.get(col)}, want {(p_, s)}"
                                for col, p_, s in decimals),
                      "the server sends typmod -1 for numeric columns")

    checks = [
        ("region", "[jdbc] PreparedStatement region = ? AND day BETWEEN ? AND ?, 7 executions",
         region_sql.replace("region = ?", "region = 'North'").replace(
             "BETWEEN ? AND ?", f"BETWEEN DATE '{first}' AND DATE '{last}'")),
        ("kiosk", "[jdbc] PreparedStatement over every type (numeric, bool, timestamptz, date, "
         "float8, text, int4, int8, timestamp, NULLs), 7 executions",
         kiosk_sql.replace("?", "1")),
        ("count", "[jdbc] PreparedStatement with timestamptz, text, int8 and bool parameters",
         count_sql.replace("order_ts >= ?", f"order_ts >= TIMESTAMP '{last}T00:00:00Z'")
         .replace("channel <> ?", "channel <> 'web'").replace("> ?) = ?", "> 100) = true"),
         ),
    ]
    for label, what, ref_sql in checks:
        a, err = answer("query", label)
        want, rerr = c.query(ref_sql)
        cols = [col for col, _ in a.get("columns") or []]
        d = err or rerr or differ(cols, a.get("rows") or [], want)
        rep.check(not d and a.get("stable"), what,
                  d or (f"{len(want)} rows as medallion query, column types "
                        f"{[t for _, t in a['columns']]}" if a.get("stable") else
                        "executions past the prepare threshold answered differently"))
    a, err = answer("update", "insert")
    rep.check(a.get("sqlstate") == "25006" and a.get("then_select"),
              "[jdbc] executeUpdate(INSERT …) refused with 25006, then the connection answers",
              err or f"{a.get('sqlstate')}: {a.get('message')}; then SELECT 1: "
                     f"{a.get('then_select')}")


def stage_odbc(c):
    rep = c.rep
    if ODBC_DRIVER not in pyodbc.drivers():
        rep.check(False, "[odbc] psqlODBC is installed",
                  f"drivers: {pyodbc.drivers()} — apt-get install odbc-postgresql unixodbc")
        return
    dsnless = (f"DRIVER={{{ODBC_DRIVER}}};SERVER=127.0.0.1;PORT={c.server.port};DATABASE=lake;"
               f"UID={USER};PWD=;BoolsAsChar=0")
    kiosk_sql = KIOSK_QUERY.replace("ORDER BY", "WHERE sale_id >= ? ORDER BY")
    label, dash = dashboard(c.days)[1]
    try:
        conn = pyodbc.connect(dsnless, autocommit=True, timeout=10)
    except pyodbc.Error as e:
        rep.check(False, "[odbc] pyodbc connects without a DSN", f"{e}")
        return
    try:
        cur = conn.cursor()
        for what, sql, params, ref_sql in [
            (f"[odbc] pyodbc, no DSN: {label}", dash, [], dash),
            ("[odbc] pyodbc, no DSN: every type with a ? parameter", kiosk_sql, [1],
             kiosk_sql.replace("?", "1")),
        ]:
            want, err = c.query(ref_sql)
            try:
                cur.execute(sql, *params)
                cols = [d[0] for d in cur.description]
                got = [tuple(r) for r in cur.fetchall()]
                d = err or differ(cols, got, want, naive=True)
            except pyodbc.Error as e:
                d = f"{e}"
            rep.check(not d, what, d or f"{len(want)} rows as medallion query")
        try:
            cur.execute(WRITES[0])
            state = "no error"
        except pyodbc.Error as e:
            state = e.args[0]
        try:
            then = cur.execute("SELECT 1 AS one").fetchall()[0][0]
        except pyodbc.Error as e:
            then = f"{e}"
        rep.check(state == "25006" and then == 1,
                  "[odbc] pyodbc: INSERT refused with 25006, then the connection answers",
                  f"{state}; then {then}")
    finally:
        conn.close()

    if not shutil.which("isql"):
        rep.check(False, "[odbc] isql is installed", "apt-get install unixodbc")
        return
    ini = os.path.join(c.work, "odbc.ini")
    with open(ini, "w") as f:
        f.write(f"[lake]\nDriver = {ODBC_DRIVER}\nServername = 127.0.0.1\nPort = {c.server.port}\n"
                f"Database = lake\nUsername = {USER}\nPassword =\n")
    label, sql = dashboard(c.days)[0]
    want, err = c.query(sql)
    try:
        p = subprocess.run(["isql", "-b", "-x0x09", "lake"], input=sql + "\n", capture_output=True,
                           text=True, timeout=CLIENT_TIMEOUT,
                           env=client_env(ODBCINI=ini, ODBCSYSINI="/etc"))
        rows = [ln.split("\t") for ln in p.stdout.splitlines() if ln.strip()]
        cols = ["region", "orders", "units", "revenue"]
        d = err or (p.stdout.strip() if "[ISQL]" in p.stdout else "") or differ(cols, rows, want)
    except subprocess.TimeoutExpired:
        d = f"no answer in {CLIENT_TIMEOUT} s"
    rep.check(not d, f"[odbc] isql with a DSN in a temporary odbc.ini: {label}",
              d or f"{len(rows)} rows as medallion query")


def stage_freshness(c):
    """New data, committed while clients keep querying."""
    rep = c.rep
    watch = {
        "silver.orders": "SELECT count(*) AS n FROM silver.orders",
        "bronze.orders_raw": "SELECT count(*) AS n FROM bronze.orders_raw",
        "gold.sales_by_region_day": "SELECT count(*) AS n, sum(orders) AS orders "
                                    "FROM gold.sales_by_region_day",
    }
    columns = {"gold.sales_by_region_day": ["n", "orders"]}
    old = {k: c.query(sql)[0] for k, sql in watch.items()}
    if not rep.check(all(old.values()), "[freshness] medallion query counts the watched tables",
                     f"{old}"):
        return
    retail = os.path.join(c.work, "retail")
    more = c.med("demo --more", "demo", "--dir", retail, "--lake",
                 os.path.join(c.work, "scratch-lake"), "--scale", c.scale, "--more",
                 "--engine", c.engine)
    if not rep.check(more.ok, "[freshness] `demo --more` adds a day of source data", more.said()):
        return

    seen, stop, errors = [], threading.Event(), []

    def watcher(offset):
        try:
            with connect(c.server.port) as conn:
                keys = list(watch)
                i = offset
                while not stop.is_set():
                    k = keys[i % len(keys)]
                    i += 1
                    t0 = time.monotonic()
                    row = conn.execute(watch[k]).fetchone()
                    seen.append((k, tuple(row), t0, time.monotonic()))
        except Exception as e:  # noqa: BLE001
            errors.append(f"{type(e).__name__}: {e}")

    threads = [threading.Thread(target=watcher, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    time.sleep(0.3)
    run_start = time.monotonic()
    done = c.med("run into the served lake", "run", os.path.join(retail, "pipeline.toml"),
                 "--lake", c.lake, "--engine", c.engine)
    run_end = time.monotonic()
    time.sleep(0.3)
    stop.set()
    for t in threads:
        t.join(30)
    if not rep.check(done.ok, "[freshness] `medallion run` commits the new day while serving",
                     done.said()):
        return
    new = {k: c.query(sql)[0] for k, sql in watch.items()}
    if not rep.check(all(new.values()), "[freshness] medallion query counts them after the run",
                     f"{new}"):
        return
    with connect(c.server.port) as conn:
        for k, sql in watch.items():
            cur = conn.execute(sql)
            got = cur.fetchall()
            d = differ([x.name for x in cur.description], got, new[k])
            rep.check(not d and new[k] != old[k],
                      f"[freshness] the first query after the run: {k} as medallion query",
                      d or f"{old[k][0]} → {new[k][0]}")

    def as_row(k, rows):
        return tuple(rows[0].get(col) for col in columns.get(k, ["n"]))

    def is_row(got, want):
        return len(got) == len(want) and all(same(g, w) for g, w in zip(got, want))
    for k in watch:
        answers = [(row, t0, t1) for key, row, t0, t1 in seen if key == k]
        olds = [r for r, _, _ in answers if is_row(r, as_row(k, old[k]))]
        news = [r for r, _, _ in answers if is_row(r, as_row(k, new[k]))]
        other = sorted({r for r, _, _ in answers} - set(olds) - set(news))
        during = sum(1 for _, t0, t1 in answers if t1 >= run_start and t0 <= run_end)
        rep.check(not errors and not other and olds and news,
                  f"[freshness] {k} during the commit: the old or the new answer, nothing else",
                  "; ".join(errors) or f"{len(answers)} answers ({during} while the run ran): "
                  f"{len(olds)} old {as_row(k, old[k])}, {len(news)} new {as_row(k, new[k])}"
                  + (f", other: {other}" if other else ""))


def stage_load(c, seconds):
    rep, server = c.rep, c.server
    queries = dashboard(c.days)
    want = {label: c.query(sql)[0] or [] for label, sql in queries}
    before = server.memory()
    latencies, errors, wrong, lock = [], [], [], threading.Lock()
    deadline = time.monotonic() + seconds

    def client(n):
        rng = random.Random(n)
        try:
            with connect(server.port) as conn:
                while time.monotonic() < deadline:
                    label, sql = rng.choice(queries)
                    t0 = time.monotonic()
                    cur = conn.execute(sql)
                    rows = cur.fetchall()
                    took = time.monotonic() - t0
                    d = differ([x.name for x in cur.description], rows, want[label])
                    with lock:
                        latencies.append(took)
                        if d:
                            wrong.append(f"{label}: {d}")
        except Exception as e:  # noqa: BLE001
            with lock:
                errors.append(f"client {n}: {type(e).__name__}: {first_line(e)}")

    threads = [threading.Thread(target=client, args=(n,)) for n in range(LOAD_CONNECTIONS)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 60)
    took = time.monotonic() - started
    after = server.memory()
    lat = sorted(latencies)

    def pct(p):
        return lat[min(len(lat) - 1, int(p * len(lat)))] * 1000 if lat else float("nan")
    summary = (f"{len(lat)} queries in {took:.1f} s ({len(lat) / took:.0f}/s) over "
               f"{LOAD_CONNECTIONS} connections; latency p50 {pct(0.5):.0f} ms, p99 "
               f"{pct(0.99):.0f} ms, max {pct(1.0):.0f} ms; server RSS "
               f"{before.get('VmRSS', 0) / 1024:.0f} → {after.get('VmRSS', 0) / 1024:.0f} MiB "
               f"(peak {after.get('VmHWM', 0) / 1024:.0f} MiB)")
    rep.check(not errors and not wrong and lat and server.proc.poll() is None,
              f"[load] {LOAD_CONNECTIONS} connections × dashboard queries for {seconds:.0f} s: "
              "no errors, every answer right",
              "; ".join((errors + wrong)[:4]) + (" — " if errors or wrong else "") + summary)
    print(f"     load: {summary}", flush=True)
    peak = after.get("VmHWM", 0) / 1024
    rep.check(0 < peak < LOAD_PEAK_RSS_MIB, f"[load] the server's memory stays bounded under load "
              f"(peak RSS below {LOAD_PEAK_RSS_MIB} MiB)", f"peak {peak:.0f} MiB")


def stage_auth(c):
    rep = c.rep
    env = dict(c.env)
    env.pop("MEDALLION_SERVE_PASSWORD", None)
    port = free_port()
    try:
        p = subprocess.run([c.binary, "serve", "--lake", c.lake, "--bind", "0.0.0.0", "--pg-port",
                            str(port)], capture_output=True, text=True, env=env, timeout=20)
        rep.check(p.returncode != 0 and "password" in p.stderr.lower(),
                  "[auth] serve --bind 0.0.0.0 without a password exits non-zero, naming the "
                  "password", f"exit {p.returncode}: {p.stderr.strip()[:200]}")
    except subprocess.TimeoutExpired:
        rep.check(False, "[auth] serve --bind 0.0.0.0 without a password exits non-zero, naming "
                  "the password", "it kept running (listening on every interface) for 20 s")

    pw_file = os.path.join(c.work, "password")
    with open(pw_file, "w") as f:
        f.write(PASSWORD + "\n")
    server = PgServer(c.binary, c.lake, c.work, "serve-auth", "--password-file", pw_file, env=env)
    c.servers.append(server)
    if not rep.check(server.ready(), "[auth] serve --password-file starts on 127.0.0.1",
                     server.tail()):
        return

    def attempt(user, password):
        try:
            with connect(server.port, password=password, user=user) as conn:
                return conn.execute("SELECT count(*) FROM gold.sales_by_region_day").fetchone()[0]
        except psycopg.Error as e:
            return e

    got = attempt(USER, PASSWORD)
    rep.check(isinstance(got, int), f"[auth] user {USER} with the right password: SCRAM login, "
              "then a query", f"count(*) = {got}" if isinstance(got, int) else f"{got}")
    got = attempt(USER, WRONG_PASSWORD)
    rep.check(isinstance(got, psycopg.Error) and "password" in str(got).lower(),
              "[auth] a wrong password is refused, the error naming the password",
              first_line(got) if isinstance(got, Exception) else f"let in: count(*) = {got}")
    got = attempt(USER, None)
    rep.check(isinstance(got, psycopg.Error), "[auth] no password is refused",
              first_line(got) if isinstance(got, Exception) else f"let in: count(*) = {got}")
    got = attempt("postgres", PASSWORD)
    rep.check(isinstance(got, psycopg.Error),
              f"[auth] another user than {USER} is refused, even with the password",
              first_line(got) if isinstance(got, Exception) else
              f"user postgres let in: count(*) = {got} (the password source ignores the login's "
              "user name)")
    time.sleep(0.2)
    err = server.stderr()
    refusals = [ln for ln in err.splitlines() if "refused a login" in ln]
    rep.check(bool(refusals) and WRONG_PASSWORD not in err and PASSWORD not in err,
              "[auth] stderr logs the refused login, without the password tried (or the right one)",
              " | ".join(refusals[:2]) or f"no 'refused a login' line: {server.tail()}")
    rep.check(any(f"`{USER}`" in ln for ln in refusals),
              f"[auth] the refused-login line names the user ({USER})",
              " | ".join(refusals[:2]) + " — the user comes from the SCRAM client-first message, "
              "where libpq sends an empty name (the startup message has the user)")
    server.stop()


def stage_limits(c):
    rep = c.rep
    env = dict(c.env, MEDALLION_SERVE_PASSWORD=ENV_PASSWORD)
    server = PgServer(c.binary, c.lake, c.work, "serve-limits", "--max-connections",
                      MAX_CONNECTIONS, "--max-memory", SMALL_MEMORY, env=env)
    c.servers.append(server)
    if not rep.check(server.ready(), f"[limits] serve --max-connections {MAX_CONNECTIONS} "
                     f"--max-memory {SMALL_MEMORY} with MEDALLION_SERVE_PASSWORD starts",
                     server.tail()):
        return
    conns = []
    try:
        try:
            conns = [connect(server.port, password=ENV_PASSWORD) for _ in range(MAX_CONNECTIONS)]
            rep.check(True, f"[limits] the password from MEDALLION_SERVE_PASSWORD lets "
                      f"{MAX_CONNECTIONS} connections in")
        except psycopg.Error as e:
            rep.check(False, "[limits] the password from MEDALLION_SERVE_PASSWORD lets "
                      f"{MAX_CONNECTIONS} connections in", first_line(e))
            return
        try:
            extra = connect(server.port, password=ENV_PASSWORD)
            extra.close()
            refused = None
        except psycopg.Error as e:
            refused = e
        rep.check(refused is not None, f"[limits] connection {MAX_CONNECTIONS + 1} is turned away",
                  first_line(refused) if refused else "it was let in")
        rep.known(refused is not None and "too many" in str(refused).lower(),
                  f"[limits] connection {MAX_CONNECTIONS + 1} is told why (PostgreSQL: FATAL "
                  "53300 'sorry, too many clients already')",
                  first_line(refused) if refused else "it was let in",
                  "the server closes the socket without an ErrorResponse")
        conns.pop().close()
        again, deadline = None, time.monotonic() + 3
        while time.monotonic() < deadline:
            try:
                conns.append(connect(server.port, password=ENV_PASSWORD))
                again = True
                break
            except psycopg.Error as e:
                again = e
                time.sleep(0.1)
        rep.check(again is True, "[limits] a closed connection's slot is given to the next one",
                  "" if again is True else first_line(again))

        a, b = conns[0], conns[1]
        try:
            a.execute(MEMORY_HOG).fetchall()
            hog = None
        except psycopg.Error as e:
            hog = e
        then = a.execute("SELECT count(*) FROM gold.customer_segments").fetchone()[0]
        rep.check(hog is not None and ("resources exhausted" in str(hog).lower()
                                       or "memory" in str(hog).lower()) and then > 0,
                  f"[limits] a query needing more than --max-memory {SMALL_MEMORY} fails, naming "
                  "memory; the connection then answers",
                  f"{first_line(hog) if hog else 'it ran'}; then count(*) = {then}")
        try:
            spilled = a.execute(SPILLING).fetchone()[0]
        except psycopg.Error as e:
            spilled = first_line(e)
        rep.check(spilled == 300000, f"[limits] a grouped aggregate needing more than --max-memory "
                  f"{SMALL_MEMORY} spills to disk and answers right", f"{spilled}")
        rep.known(hog is not None and hog.sqlstate == "53200",
                  "[limits] the memory error carries SQLSTATE 53200 (out_of_memory)",
                  f"{hog.sqlstate if hog else 'no error'}",
                  "datafusion-postgres reports every DataFusion error as XX000")
        with connect(c.server.port) as big:
            try:
                n = big.execute(MEMORY_HOG).fetchone()[0]
            except psycopg.Error as e:
                n = first_line(e)
        rep.check(n == 300000, "[limits] the same query passes on the server with the default "
                  "--max-memory", f"{n}")

        leaks = []
        for setting, probe in [("SET datafusion.runtime.memory_limit = '1G'", MEMORY_HOG),
                               ("SET datafusion.catalog.default_schema = 'gold'",
                                "SELECT count(*) FROM sales_by_region_day")]:
            try:
                a.execute(setting)
                accepted = "accepted"
            except psycopg.Error as e:
                accepted = f"refused ({e.sqlstate})"
            try:
                b.execute(probe).fetchall()
                leaks.append(f"after `{setting}` ({accepted}) on one connection, another "
                             f"connection's `{probe[:50]}…` ran")
            except psycopg.Error:
                pass
        rep.check(not leaks, "[limits] a client's SET changes nothing for other clients "
                  "(memory limit, default schema)",
                  "; ".join(leaks) + (" — every connection shares one SessionContext, so a SET "
                                      "of datafusion.* applies server-wide" if leaks else ""))
    finally:
        for conn in conns:
            conn.close()
        server.stop()

def stage_timeout(c):
    rep = c.rep
    server = PgServer(c.binary, c.lake, c.work, "serve-timeout", "--query-timeout",
                      f"{QUERY_TIMEOUT}s", env=c.env)
    c.servers.append(server)
    if not rep.check(server.ready(), f"[timeout] serve --query-timeout {QUERY_TIMEOUT}s starts",
                     server.tail()):
        return
    check_sql = "SELECT count(*) FROM gold.customer_segments"
    want = c.query(check_sql)[0]
    want = list(want[0].values())[0] if want else None
    try:
        with connect(server.port) as conn, connect(server.port) as other:
            for protocol, sql, params in [
                    ("simple protocol", SLOW_AGGREGATE, None),
                    ("extended protocol, prepared with a parameter",
                     SLOW_AGGREGATE.replace("%", "%%") + " WHERE value > %s", [0])]:
                rss = server.memory().get("VmRSS", 0) // 1024
                started = time.monotonic()
                try:
                    got, err = conn.execute(sql, params, prepare=params is not None).fetchall(), None
                except psycopg.Error as e:
                    got, err = None, e
                took = time.monotonic() - started
                rep.check(err is not None and err.sqlstate == "57014"
                          and QUERY_TIMEOUT * 0.9 <= took < QUERY_TIMEOUT + 1.5,
                          f"[timeout] {protocol}: a query running past --query-timeout "
                          f"{QUERY_TIMEOUT}s gets SQLSTATE 57014 (query_canceled) on time",
                          f"{err.sqlstate if err else 'no error'} after {took:.2f} s: "
                          f"{first_line(err) if err else got}")
                if params is None:
                    rep.check(err is not None and f"limit of {QUERY_TIMEOUT}s" in str(err)
                              and "--query-timeout" in str(err),
                              "[timeout] the error names the limit and how to change it",
                              first_line(err) if err else "no error")
                _stopped(c, server, other, f"[timeout] {protocol}", check_sql, want, rss)
                try:
                    then = conn.execute(check_sql).fetchone()[0]
                except psycopg.Error as e:
                    then = first_line(e)
                rep.check(then == want, f"[timeout] {protocol}: the same connection then answers",
                          f"count(*) = {then}, want {want}")

            rows, err, took, then = _stream_single_rows(server.port, SLOW_ROWS, check_sql)
            rep.check(rows > 0 and err and err[0] == "57014"
                      and QUERY_TIMEOUT * 0.9 <= took < QUERY_TIMEOUT + 1.5 and then == want,
                      "[timeout] while rows stream (simple protocol, libpq single-row mode): "
                      "SQLSTATE 57014 after the rows already sent, on time; the connection then "
                      "answers", f"{rows} rows, then {err} after {took:.2f} s; then {then}")
            _stopped(c, server, other, "[timeout] streaming rows", check_sql, want, None)

            conn.execute("SET statement_timeout = '500ms'")
            started = time.monotonic()
            try:
                conn.execute(SLOW_AGGREGATE).fetchall()
                err = None
            except psycopg.Error as e:
                err = e
            took = time.monotonic() - started
            shown = conn.execute("SHOW statement_timeout").fetchone()[0]
            rep.check(err is not None and err.sqlstate == "57014" and 0.4 <= took < 1.8
                      and "statement_timeout of 500ms" in str(err),
                      "[timeout] SET statement_timeout = '500ms' lowers the limit for that "
                      "connection (57014 after 0.5 s, naming statement_timeout)",
                      f"SHOW: {shown}; {err.sqlstate if err else 'no error'} after {took:.2f} s: "
                      f"{first_line(err) if err else ''}")
            started = time.monotonic()
            try:
                other.execute(SLOW_AGGREGATE).fetchall()
                err = None
            except psycopg.Error as e:
                err = e
            took = time.monotonic() - started
            rep.check(err is not None and err.sqlstate == "57014" and took >= QUERY_TIMEOUT * 0.9,
                      "[timeout] another connection keeps the server's limit",
                      f"{err.sqlstate if err else 'no error'} after {took:.2f} s")
            conn.execute("SET statement_timeout = '1h'")
            started = time.monotonic()
            try:
                conn.execute(SLOW_AGGREGATE).fetchall()
                err = None
            except psycopg.Error as e:
                err = e
            took = time.monotonic() - started
            rep.check(err is not None and err.sqlstate == "57014" and took < QUERY_TIMEOUT + 1.5,
                      "[timeout] SET statement_timeout = '1h' does not lift the server's limit",
                      f"{err.sqlstate if err else 'no error'} after {took:.2f} s")
    finally:
        server.stop()
    rep.check("queries stopped after 2s" in server.stderr(),
              "[timeout] the server's banner states the limit", server.tail(3))


def _stopped(c, server, other, what, check_sql, want, rss):
    """Whether a canceled query's work stopped: the server's CPU falls to idle, another
    connection answers at once."""
    cpu, started = server.cpu_seconds(), time.monotonic()
    try:
        n = other.execute(check_sql).fetchone()[0]
    except psycopg.Error as e:
        n = first_line(e)
    fast = time.monotonic() - started
    time.sleep(1.0)
    busy = (server.cpu_seconds() - cpu) / (time.monotonic() - started)
    after = server.memory().get("VmRSS", 0) // 1024
    memory = f"; RSS {rss} MiB before, {after} MiB after" if rss is not None else ""
    c.rep.check(busy < IDLE_CPU and n == want and fast < 1.0,
                f"{what}: the canceled query stopped (server CPU below {IDLE_CPU:.0%} of a core "
                "right after; another connection answers within 1 s)",
                f"CPU {busy:.0%}; count(*) = {n} in {fast * 1000:.0f} ms{memory}")


def _stream_single_rows(port, sql, then_sql):
    """Runs `sql` over the simple protocol in libpq's single-row mode (rows are taken as they
    come, not buffered): (rows received, (SQLSTATE, message) of the error, seconds, the answer to
    `then_sql` on the same connection)."""
    with connect(port) as conn:
        pg = conn.pgconn
        started = time.monotonic()
        pg.send_query(sql.encode())
        pg.set_single_row_mode()
        rows, err = 0, None
        while (res := pg.get_result()) is not None:
            if res.status == psycopg.pq.ExecStatus.SINGLE_TUPLE:
                rows += 1
            elif res.status == psycopg.pq.ExecStatus.FATAL_ERROR:
                code = res.error_field(psycopg.pq.DiagnosticField.SQLSTATE) or b""
                err = (code.decode(), res.error_message.decode().strip())
        took = time.monotonic() - started
        try:
            then = conn.execute(then_sql).fetchone()[0]
        except psycopg.Error as e:
            then = first_line(e)
    return rows, err, took, then


def https_get(port, path, context, headers=None):
    """(status, headers, body) of one GET over HTTPS to 127.0.0.1."""
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=CLIENT_TIMEOUT)
    try:
        conn.request("GET", path, headers=headers or {})
        r = conn.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        conn.close()


def stage_tls(c):
    rep = c.rep
    tls = os.path.join(c.work, "tls")
    os.makedirs(tls, exist_ok=True)
    cert, key = os.path.join(tls, "cert.pem"), os.path.join(tls, "key.pem")
    p = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                        "-out", cert, "-days", "2", "-subj", "/CN=localhost", "-addext",
                        "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                       capture_output=True, text=True, timeout=CLIENT_TIMEOUT)
    if not rep.check(p.returncode == 0, "[tls] openssl makes a self-signed certificate for "
                     "127.0.0.1", "" if p.returncode == 0 else p.stderr.strip()[-300:]):
        return
    server = PgServer(c.binary, c.lake, c.work, "serve-tls", "--tls-cert", cert, "--tls-key", key,
                      env=c.env, http=True)
    c.servers.append(server)
    if not rep.check(server.ready(), "[tls] serve --tls-cert/--tls-key with HTTP starts",
                     server.tail()):
        return
    port = server.http_port
    trusted = ssl.create_default_context(cafile=cert)
    try:
        rep.check(f"https://127.0.0.1:{port}/" in server.stderr(),
                  "[tls] the banner gives the HTTP side's address as https://", server.tail(2))
        # app.js, not `/`: the page at `/` needs the npm package built (wasm/pkg), which a
        # fresh checkout has only after `npm run build`, later in tests/run.sh.
        status, _, body = https_get(port, "/app.js", trusted)
        with open(os.path.join(HERE, "..", "web", "app.js"), "rb") as f:
            index = f.read()
        rep.check(status == 200 and body == index,
                  "[tls] GET /app.js over HTTPS, verified against the certificate: the dashboard's script",
                  f"HTTP {status}, {len(body)} bytes (app.js: {len(index)})")

        parquet = sorted(glob.glob(os.path.join(c.lake, "gold", "sales_by_region_day", "*.parquet")))
        if rep.check(bool(parquet), "[tls] the served lake has a Parquet file to read"):
            with open(parquet[0], "rb") as f:
                data = f.read()
            rel = os.path.relpath(parquet[0], c.lake)
            bad = []
            for ask, want_range, want in [("bytes=-8", f"bytes {len(data) - 8}-{len(data) - 1}",
                                           data[-8:]),
                                          ("bytes=4-1003", "bytes 4-1003", data[4:1004])]:
                status, headers, body = https_get(port, f"/lake/{rel}", trusted, {"Range": ask})
                got_range = headers.get("Content-Range", headers.get("content-range", ""))
                if status != 206 or body != want or got_range != f"{want_range}/{len(data)}":
                    bad.append(f"{ask}: HTTP {status}, {got_range!r}, {len(body)} bytes")
            rep.check(not bad and data.endswith(b"PAR1"),
                      "[tls] Range GETs of a lake file over HTTPS (the footer, a middle range): "
                      "206 with the file's bytes", "; ".join(bad) or f"/lake/{rel}")

        try:
            https_get(port, "/", ssl.create_default_context())
            refused = None
        except ssl.SSLCertVerificationError as e:
            refused = str(e)
        rep.check(refused is not None, "[tls] a client without the certificate as CA refuses it "
                  "(the server presents the given certificate)",
                  refused or "the server's certificate was accepted without it as CA")

        plain = http.client.HTTPConnection("127.0.0.1", port, timeout=CLIENT_TIMEOUT)
        try:
            plain.request("GET", "/")
            r = plain.getresponse()
            status, body = r.status, r.read().decode(errors="replace")
        except (OSError, http.client.HTTPException) as e:
            status, body = None, f"{type(e).__name__}: {e}"
        finally:
            plain.close()
        rep.check(status == 400 and "https://" in body,
                  "[tls] plain HTTP to the HTTPS port is told to use https://", f"{status}: {body}")

        try:
            with psycopg.connect(host="127.0.0.1", port=server.port, dbname="lake", user=USER,
                                 sslmode="verify-full", sslrootcert=cert, connect_timeout=10,
                                 autocommit=True) as conn:
                n = conn.execute("SELECT count(*) FROM gold.customer_segments").fetchone()[0]
                encrypted = conn.pgconn.ssl_in_use
        except psycopg.Error as e:
            n, encrypted = first_line(e), False
        rep.check(isinstance(n, int) and n > 0 and encrypted,
                  "[tls] psycopg with sslmode=verify-full (the certificate as root) connects "
                  "encrypted and queries", f"count(*) = {n}; ssl_in_use = {encrypted}")
    finally:
        server.stop()

    ec_key, ec_cert = os.path.join(tls, "ec-key.pem"), os.path.join(tls, "ec-cert.pem")
    made = (subprocess.run(["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout",
                            "-out", ec_key], capture_output=True, timeout=CLIENT_TIMEOUT)
            .returncode == 0
            and subprocess.run(["openssl", "req", "-x509", "-key", ec_key, "-out", ec_cert,
                                "-days", "2", "-subj", "/CN=localhost"], capture_output=True,
                               timeout=CLIENT_TIMEOUT).returncode == 0)
    if rep.check(made, "[tls] openssl makes an EC key in SEC1 form (BEGIN EC PRIVATE KEY)"):
        try:
            p = subprocess.run([c.binary, "serve", "--lake", c.lake, "--pg-port", str(free_port()),
                                "--http-port", "0", "--tls-cert", ec_cert, "--tls-key", ec_key],
                               capture_output=True, text=True, env=c.env, timeout=20)
            said = f"exit {p.returncode}: {p.stderr.strip()[-300:]}"
            refused = p.returncode != 0 and "PKCS#8" in p.stderr
        except subprocess.TimeoutExpired:
            said, refused = "it kept running (serving PostgreSQL unencrypted) for 20 s", False
        rep.check(refused, "[tls] a key that is not PKCS#8 stops the server at start, saying how "
                  "to convert it (rather than serving unencrypted)", said)


# ── main ─────────────────────────────────────────────────────────────────────────────────────


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("binary", help="the medallion executable")
    ap.add_argument("--scale", default="0.3", help="the demo's --scale (default 0.3)")
    ap.add_argument("--engine", default="native", choices=["native", "guest"],
                    help="engine of demo, run and query (default native)")
    ap.add_argument("--load-seconds", type=float, default=30.0)
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
        work = tempfile.mkdtemp(prefix="serve-")
    started = time.monotonic()
    # psycopg logs the failed RELEASE SAVEPOINT that the nested-transaction check reports.
    logging.getLogger("psycopg").setLevel(logging.CRITICAL)
    rep = ServeReport()
    env = {k: v for k, v in os.environ.items() if k != "MEDALLION_SERVE_PASSWORD"}
    env["RUST_BACKTRACE"] = "0"
    med = Medallion(binary, env)
    lake = os.path.join(work, "lake")
    stage = ["demo"]
    servers = []

    def hung():
        print(f"\nFAIL the test hung in stage {stage[0]} for {WATCHDOG_SECONDS} s; server stderr:",
              flush=True)
        for s in servers:
            print(f"  {s.name}: {s.tail(20)}", flush=True)
            s.stop()
        print(f"work folder kept: {work}", flush=True)
        os._exit(1)
    watchdog = threading.Timer(WATCHDOG_SECONDS, hung)
    watchdog.daemon = True
    watchdog.start()

    print(f"work in {work} (psycopg {psycopg.__version__}, SQLAlchemy {sa.__version__}, "
          f"pandas {pd.__version__}, pyodbc {pyodbc.version})", flush=True)
    demo = med("demo", "demo", "--dir", os.path.join(work, "retail"), "--lake", lake,
               "--scale", args.scale, "--engine", args.engine)
    if rep.check(demo.ok, f"[setup] medallion demo --scale {args.scale}", demo.said()):
        server = PgServer(binary, lake, work, "serve", env=env)
        servers.append(server)
        ok = rep.check(server.ready(), "[setup] medallion serve accepts connections",
                       f"port {server.port}; " + server.tail(3))
        c = Ctx(rep=rep, med=med, binary=binary, engine=args.engine, work=work, lake=lake,
                server=server, env=env, scale=args.scale, servers=servers)
        days, err = c.query("SELECT DISTINCT day FROM gold.sales_by_region_day ORDER BY day")
        c.days = [r["day"] for r in days or []]
        ok = ok and rep.check(len(c.days) >= 3, "[setup] the demo's gold table spans 3+ days",
                              err or f"{c.days}")
        try:
            if ok:
                # The stages after it read bronze.kiosk_sales, yet have more to say if it is
                # missing: they run anyway.
                stage_catalog(c)
                for name, run in [("psql", stage_psql), ("psycopg", stage_psycopg),
                                  ("sqlalchemy", stage_sqlalchemy), ("jdbc", stage_jdbc),
                                  ("odbc", stage_odbc), ("freshness", stage_freshness),
                                  ("load", lambda c: stage_load(c, args.load_seconds)),
                                  ("auth", stage_auth), ("timeout", stage_timeout),
                                  ("tls", stage_tls), ("limits", stage_limits)]:
                    stage[0] = name
                    if server.proc.poll() is not None:
                        rep.check(False, f"[{name}] the server is running",
                                  f"exit {server.proc.returncode}: {server.tail()}")
                        break
                    try:
                        run(c)
                    except Exception as e:  # noqa: BLE001  (a client's error a check missed)
                        rep.check(False, f"[{name}] the stage ran to its end",
                                  f"{type(e).__name__}: {first_line(e)}; server: {server.tail(4)}")
        finally:
            for s in servers:
                s.stop()
    watchdog.cancel()
    took = time.monotonic() - started
    print(f"\n{rep.count - len(rep.failed)} of {rep.count} checks passed in {took:.0f} s"
          + (f"; {len(rep.limitations)} known limitations skipped" if rep.limitations else ""))
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
