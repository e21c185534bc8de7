#!/usr/bin/env python3
"""Snapshot benchmark: `medallion extract` vs DuckDB's postgres extension vs `psql \\copy`, the
same PostgreSQL table pulled out in the same run.

The data
  A throwaway PostgreSQL (tests/pg_cluster.py: Debian's `postgresql`, initdb in a temp folder, a
  free loopback port, scram-sha-256 over TCP) gets `public.orders`, --rows rows (default 5M)
  generated server-side with generate_series (deterministic, no client transfer):
    id bigint PRIMARY KEY, customer_id int, status text (5 values), amount numeric(12,2) (1% NULL),
    created_at timestamptz, updated_at timestamptz (indexed, for the incremental run),
    note text (10-69 characters, 25% NULL)
  then VACUUM (FREEZE, ANALYZE), CHECKPOINT and one warm-up scan: every tool reads a frozen,
  hinted table from memory (shared buffers or the OS page cache), so none pays for the first
  reader's hint-bit writes or a cold disk.
  Tuned for a benchmark, not for durability (nothing at stake; see PG_SETTINGS): fsync,
  synchronous_commit and full_page_writes off, wal_level minimal, shared_buffers 2GB,
  autovacuum off (the one VACUUM is explicit), big max_wal_size. Every tool connects over TCP to
  127.0.0.1 with the password, as a remote client would.

The tools (each a child process; run in turn, never at once, rotating the order per round)
  medallion  `medallion extract spec --lake L --table orders_snap` (mode = "snapshot"): one
             REPEATABLE READ transaction, 10k-row binary fetches into Arrow, Parquet (snappy) and
             one Delta commit. A fresh lake each run.
  duckdb     `COPY (SELECT * FROM pg.public.orders) TO 'x.parquet'` in a Python child with the
             venv's duckdb and its postgres extension (pip wheel `duckdb-extension-postgres` of the
             same version, loaded from the wheel's file: DuckDB cannot download extensions here),
             ATTACHed READ_ONLY; DuckDB's defaults (threads = cores: it reads ctid ranges over
             several connections in parallel). Its RSS includes the Python interpreter (~40 MB).
  psql       `psql -c "\\copy public.orders TO 'x.csv' CSV"` (text COPY; psql writes the file).

What it measures (medians of --repeat runs per tool)
  wall       from spawning the child to its exit, s; rows/s = rows / wall
  MB/s       out: bytes of what the tool wrote (Parquet files of the Delta table, not its log;
             the Parquet file; the CSV) / wall.  table: pg_total_relation_size (heap + TOAST +
             both indexes, printed in the header) / wall: the source side, the same for all
  RSS        the child's peak resident set: its VmHWM, read from /proc every 20 ms
  CPU        the child's user+sys seconds, and PostgreSQL's (backends included) over the run: the
             server's share of the work differs between binary and text COPY
  load       os.getloadavg() 1-minute before each run (min-max over the runs)
  check      every run's output is read back by an engine that did not write it: the Delta table
             by deltalake, the Parquet by pyarrow, the CSV by DuckDB; row count and sum(amount)
             must equal PostgreSQL's (exact decimals). A mismatch fails the benchmark.
  incremental  a bronze table in mode = "incremental" on updated_at: the first run takes every row
             (timed too); then UPDATE sets amount, status and updated_at = now() on 1% of the rows
             (id % 100 = 0) and a second run is timed: it must append exactly those rows, with
             their new amounts (deltalake reads the rows of the newest _ingested_at).

Not a test: at 5M rows it takes minutes and its figures depend on the machine (2 shared cores
here; a cargo build next door skews them: see the load column).

No build here: --bin, else the release binary if it has `extract`, else the debug one (several
times slower; the header says which). `cargo build --release --bin medallion` first for figures
worth quoting.

Needs: apt `postgresql` (installed with apt-get when absent), the venv's duckdb, deltalake,
pyarrow and psycopg, and pip `duckdb-extension-postgres==<duckdb version>` (installed into the
running interpreter when absent; without it the DuckDB row says why it was skipped). Run as root
(PostgreSQL runs as the `postgres` user) with the venv:
  ~/.cache/medallion/venv/bin/python tests/bench/postgres_snapshot.py [--rows 1000000] [--json]
"""

from __future__ import annotations

import argparse
import glob
import importlib
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
from pg_cluster import PgCluster  # noqa: E402

TARGET = Path(os.environ.get("CARGO_TARGET_DIR", Path.home() / ".cache/medallion/target"))
PASSWORD = "bench-pw"
TICKS = os.sysconf("SC_CLK_TCK")

PG_SETTINGS = {
    "shared_buffers": "2GB",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "wal_level": "minimal",  # the load's CREATE + INSERT in one transaction skips the WAL
    "max_wal_senders": "0",
    "max_wal_size": "8GB",
    "checkpoint_timeout": "1h",
    "autovacuum": "off",
    "maintenance_work_mem": "512MB",
    "timezone": "UTC",
}

LOAD_SQL = """
CREATE TABLE public.orders (
    id          bigint NOT NULL,
    customer_id int NOT NULL,
    status      text NOT NULL,
    amount      numeric(12,2),
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    note        text
);
INSERT INTO public.orders
SELECT g,
       (1 + (g * 7919) % 100000)::int,
       (ARRAY['placed', 'paid', 'shipped', 'delivered', 'cancelled'])[(1 + g % 5)::int],
       CASE WHEN g % 100 = 37 THEN NULL ELSE round(((g * 7717) % 500000) / 100.0 + 1, 2) END,
       timestamptz '2024-01-01 00:00:00+00' + g * interval '5 seconds',
       timestamptz '2024-01-01 00:00:00+00' + g * interval '5 seconds' + (g % 7200) * interval '1 second',
       CASE WHEN g % 4 = 0 THEN NULL ELSE left('gift wrap ' || md5(g::text) || md5((g + 1)::text), (10 + g % 60)::int) END
FROM generate_series(1::bigint, {rows}) AS g;
"""

SPEC = """[pipeline]
name = "pg_bench"

[sources.shop]
kind = "postgres"
url = "env:BENCH_DATABASE_URL"

[bronze.orders_snap]
source = "shop"
table = "public.orders"
mode = "snapshot"

[bronze.orders_inc]
source = "shop"
table = "public.orders"
mode = "incremental"
watermark = "updated_at"
"""

# The DuckDB child: argv = extension file, libpq connection string, output path.
DUCKDB_CHILD = """
import sys, duckdb
ext, conninfo, out = sys.argv[1:]
con = duckdb.connect()
con.execute(f"LOAD '{ext}'")
con.execute(f"ATTACH '{conninfo}' AS pg (TYPE postgres, READ_ONLY)")
con.execute(f"COPY (SELECT * FROM pg.public.orders) TO '{out}' (FORMAT parquet)")
"""


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# What this needs: a medallion with `extract`, DuckDB's postgres extension

def has_extract(path: Path):
    return path.exists() and subprocess.run([str(path), "extract", "--help"],
                                            capture_output=True).returncode == 0


def medallion_bin(args):
    if args.bin:
        path = Path(args.bin)
        if not has_extract(path):
            raise SystemExit(f"{path} has no `extract` command")
        return path, "given"
    for profile in ("release", "debug"):
        path = TARGET / profile / "medallion"
        if has_extract(path):
            if profile == "debug":
                log(f"using the DEBUG build {path} (the release one is missing or has no "
                    "`extract`): figures are pessimistic; `cargo build --release --bin medallion` first")
            return path, profile
    raise SystemExit(f"no medallion with `extract` under {TARGET}/{{release,debug}}: "
                     "run `cargo build --release --bin medallion` first, or pass --bin")


def duckdb_postgres_extension(work: Path):
    """(path of a loadable postgres_scanner extension file, None) or (None, why not).

    The wheel ships it as postgres.duckdb_extension; DuckDB takes the extension's name from the
    file name and looks for `<name>_duckdb_cpp_init`, so it is loaded under its own name,
    postgres_scanner (the file's signature is DuckDB's and is checked as usual)."""
    import duckdb  # noqa: PLC0415

    version = duckdb.__version__
    if importlib.util.find_spec("duckdb_extension_postgres") is None:
        log(f"installing duckdb-extension-postgres=={version} into {sys.executable}")
        r = subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                            f"duckdb-extension-postgres=={version}"], capture_output=True, text=True)
        if r.returncode != 0:
            return None, (f"no duckdb-extension-postgres wheel for duckdb {version}: "
                          + (r.stderr.strip().splitlines() or ["pip failed"])[-1])
        importlib.invalidate_caches()
    import duckdb_extension_postgres  # noqa: PLC0415

    files = glob.glob(os.path.join(os.path.dirname(duckdb_extension_postgres.__file__),
                                   "extensions", f"v{version}", "*.duckdb_extension"))
    if not files:
        return None, f"the duckdb-extension-postgres wheel has no extension for v{version}"
    ext = work / "postgres_scanner.duckdb_extension"
    shutil.copyfile(files[0], ext)
    return ext, None


# ---------------------------------------------------------------------------------------------
# Measuring one child process

def server_cpu_seconds(pg: PgCluster):
    """PostgreSQL's CPU so far: the postmaster's own, its reaped children's, its live ones'."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid, ppid = int(entry), int(fields[1])
        if pid == pg.proc.pid:
            total += sum(int(x) for x in fields[11:15])
        elif ppid == pg.proc.pid:
            total += int(fields[11]) + int(fields[12])
    return total / TICKS


class PeakRss(threading.Thread):
    """The VmHWM of a process, sampled every 20 ms until it exits.

    Not wait4's ru_maxrss: that counts the forking Python's own pages (subprocess forks with
    vfork, and exec keeps the old address space's peak), so every child would look as big as
    this script. VmHWM starts afresh at exec."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid, self.bytes, self.halt = pid, 0, threading.Event()
        self.start()

    def run(self):
        while not self.halt.is_set():
            try:
                with open(f"/proc/{self.pid}/status") as f:
                    for line in f:
                        if line.startswith("VmHWM:"):
                            self.bytes = max(self.bytes, int(line.split()[1]) * 1024)
            except OSError:
                return
            self.halt.wait(0.02)


def measured(cmd, pg: PgCluster, env=None):
    """Run cmd to its end: wall s, peak RSS bytes, user+sys s, server CPU s, load before, stdout."""
    load = os.getloadavg()[0]
    cpu0 = server_cpu_seconds(pg)
    out = tempfile.TemporaryFile()
    err = tempfile.TemporaryFile()
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=out, stderr=err, env={**os.environ, **(env or {})})
    peak = PeakRss(proc.pid)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    peak.halt.set()
    proc.returncode = os.waitstatus_to_exitcode(status)
    time.sleep(0.2)  # the backends exit and are reaped after the client hangs up
    server = server_cpu_seconds(pg) - cpu0
    out.seek(0)
    err.seek(0)
    stdout, stderr = out.read().decode(), err.read().decode()
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed ({proc.returncode}):\n{stderr[-2000:]}")
    return dict(wall_s=wall, rss=peak.bytes, cpu_s=usage.ru_utime + usage.ru_stime,
                server_cpu_s=server, load=load), stdout


def parquet_bytes(folder: Path):
    return sum(f.stat().st_size for f in folder.glob("*.parquet"))


# ---------------------------------------------------------------------------------------------
# The tools and their checks

def truth(pg: PgCluster, psycopg, where=""):
    with psycopg.connect(pg.dsn()) as c:
        n, s = c.execute(f"SELECT count(*), coalesce(sum(amount), 0) FROM public.orders {where}").fetchone()
    return n, Decimal(s)


def delta_count_sum(path: Path, latest_only=False):
    """(rows, sum(amount)) of a Delta table by deltalake; of its newest extract's rows if asked."""
    import pyarrow.compute as pc  # noqa: PLC0415
    from deltalake import DeltaTable  # noqa: PLC0415

    t = DeltaTable(str(path)).to_pyarrow_dataset().to_table(columns=["amount", "_ingested_at"])
    if latest_only:
        t = t.filter(pc.equal(t["_ingested_at"], pc.max(t["_ingested_at"])))
    s = pc.sum(t["amount"]).as_py()
    return t.num_rows, Decimal(s or 0)


def run_medallion(ctx, i):
    lake = ctx.work / f"lake-{i}"
    m, stdout = measured([str(ctx.bin), "extract", str(ctx.spec), "--lake", str(lake),
                          "--table", "orders_snap", "--json"], ctx.pg, ctx.env)
    (report,) = json.loads(stdout)
    table = lake / "bronze" / "orders_snap"
    m["out_bytes"] = parquet_bytes(table)
    m["rows"] = report["rows"]
    m["got"] = delta_count_sum(table)
    shutil.rmtree(lake)
    return m


def run_duckdb(ctx, i):
    import pyarrow.compute as pc  # noqa: PLC0415
    import pyarrow.parquet as pq  # noqa: PLC0415

    out = ctx.work / f"duckdb-{i}.parquet"
    conninfo = (f"host=127.0.0.1 port={ctx.pg.port} user=postgres password={PASSWORD} "
                "dbname=postgres")
    m, _ = measured([sys.executable, "-c", DUCKDB_CHILD, str(ctx.duckdb_ext), conninfo, str(out)],
                    ctx.pg)
    m["out_bytes"] = out.stat().st_size
    t = pq.read_table(out, columns=["amount"])
    m["rows"] = t.num_rows
    m["got"] = (t.num_rows, Decimal(pc.sum(t["amount"]).as_py() or 0))
    out.unlink()
    return m


def run_psql(ctx, i):
    import duckdb  # noqa: PLC0415

    out = ctx.work / f"psql-{i}.csv"
    m, _ = measured([str(ctx.pg.bindir / "psql"), "-X", "-q", "-h", "127.0.0.1", "-p",
                     str(ctx.pg.port), "-U", "postgres", "-d", "postgres",
                     "-c", f"\\copy public.orders TO '{out}' CSV"], ctx.pg, {"PGPASSWORD": PASSWORD})
    m["out_bytes"] = out.stat().st_size
    n, s = duckdb.connect().execute(
        f"SELECT count(*), coalesce(sum(amount), 0) FROM read_csv('{out}', header = false, "
        "columns = {'id': 'BIGINT', 'customer_id': 'INTEGER', 'status': 'VARCHAR', "
        "'amount': 'DECIMAL(12,2)', 'created_at': 'VARCHAR', 'updated_at': 'VARCHAR', "
        "'note': 'VARCHAR'})").fetchone()
    m["rows"] = n
    m["got"] = (n, Decimal(s))
    out.unlink()
    return m


TOOLS = {
    "medallion": ("medallion extract → Delta (Parquet)", run_medallion),
    "duckdb": ("DuckDB postgres ext → Parquet", run_duckdb),
    "psql": ("psql \\copy → CSV", run_psql),
}


def incremental(ctx, psycopg):
    """The first incremental run (every row), 1% updated, the second run (those rows only)."""
    lake = ctx.work / "lake-inc"
    table = lake / "bronze" / "orders_inc"
    cmd = [str(ctx.bin), "extract", str(ctx.spec), "--lake", str(lake), "--table", "orders_inc",
           "--json"]
    first, stdout = measured(cmd, ctx.pg, ctx.env)
    first["rows"] = json.loads(stdout)[0]["rows"]
    first["got"] = delta_count_sum(table)
    with psycopg.connect(ctx.pg.dsn(), autocommit=True) as c:
        t0 = time.perf_counter()
        updated = c.execute("UPDATE public.orders SET amount = coalesce(amount, 0) + 1, "
                            "status = 'refunded', updated_at = now() WHERE id % 100 = 0").rowcount
        update_s = time.perf_counter() - t0
    want = truth(ctx.pg, psycopg, "WHERE id % 100 = 0")
    second, stdout = measured(cmd, ctx.pg, ctx.env)
    second["rows"] = json.loads(stdout)[0]["rows"]
    second["got"] = delta_count_sum(table, latest_only=True)
    total_rows, _ = delta_count_sum(table)
    ok = (first["got"] == ctx.truth and second["got"] == want and second["rows"] == updated
          and total_rows == ctx.truth[0] + updated)
    shutil.rmtree(lake)
    return dict(first=first, second=second, updated=updated, update_s=update_s,
                want_second=want, bronze_rows=total_rows, ok=ok)


# ---------------------------------------------------------------------------------------------

class Ctx:
    pass


def load_table(pg: PgCluster, psycopg, rows: int):
    t0 = time.perf_counter()
    with psycopg.connect(pg.dsn(), autocommit=True) as c:
        with c.transaction():
            c.execute(LOAD_SQL.format(rows=rows))
        c.execute("ALTER TABLE public.orders ADD PRIMARY KEY (id)")
        c.execute("CREATE INDEX orders_updated_at ON public.orders (updated_at)")
        c.execute("VACUUM (FREEZE, ANALYZE) public.orders")
        c.execute("CHECKPOINT")
        c.execute("SELECT count(*), sum(length(note)) FROM public.orders").fetchone()  # warm-up
        sizes = c.execute("SELECT pg_total_relation_size('public.orders'), "
                          "pg_table_size('public.orders'), pg_indexes_size('public.orders')").fetchone()
        (version,) = c.execute("SHOW server_version").fetchone()
    return time.perf_counter() - t0, sizes, version


def summarize(name, runs, rows, table_bytes, want):
    med = lambda k: statistics.median(r[k] for r in runs)  # noqa: E731
    wall = med("wall_s")
    return dict(tool=name, runs=len(runs), rows=rows, wall_s=wall, rows_per_s=rows / wall,
                out_bytes=med("out_bytes"), out_mb_s=med("out_bytes") / 1e6 / wall,
                table_mb_s=table_bytes / 1e6 / wall, peak_rss=max(r["rss"] for r in runs),
                peak_rss_median=med("rss"), cpu_s=med("cpu_s"), server_cpu_s=med("server_cpu_s"),
                load=(min(r["load"] for r in runs), max(r["load"] for r in runs)),
                walls=[r["wall_s"] for r in runs],
                ok=all(r["got"] == want and r["rows"] == want[0] for r in runs))


def print_report(meta, results, inc):
    print(f"\nPostgreSQL snapshot extract — {meta['rows']:,} rows of public.orders, PostgreSQL "
          f"{meta['pg_version']}, medallion {meta['build']} build, {os.cpu_count()} cores, "
          f"medians of {meta['repeat']} runs per tool")
    if meta["build"] == "debug":
        print("CAVEAT: the medallion figures are of a DEBUG build (the release binary has no "
              "`extract` yet); a release build is several times faster at decoding and Parquet "
              "encoding. Rebuild with `cargo build --release --bin medallion` before quoting them.")
    print(f"table: pg_total_relation_size {meta['table_bytes'] / 1e6:.0f} MB (heap + TOAST "
          f"{meta['heap_bytes'] / 1e6:.0f} MB, indexes {meta['index_bytes'] / 1e6:.0f} MB); "
          f"generated and indexed in {meta['load_s']:.1f} s")
    print(f"PostgreSQL settings: {', '.join(f'{k}={v}' for k, v in PG_SETTINGS.items())} "
          "(tuned for a benchmark: nothing durable at stake)")
    print(f"load average (1 min): {meta['load_start']:.2f} at start, {meta['load_end']:.2f} at end\n")
    print("| tool | rows/s | wall s | output | out MB/s | table MB/s | peak RSS | CPU s "
          "| server CPU s | load 1 min | rows, sum(amount) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |")
    for r in results:
        if "skipped" in r:
            print(f"| {TOOLS[r['tool']][0]} | skipped: {r['skipped']} |||||||||")
            continue
        print(f"| {TOOLS[r['tool']][0]} | {r['rows_per_s']:,.0f} | {r['wall_s']:.2f} | "
              f"{r['out_bytes'] / 1e6:.0f} MB | {r['out_mb_s']:.1f} | {r['table_mb_s']:.1f} | "
              f"{r['peak_rss'] / 2**20:.0f} MiB | {r['cpu_s']:.1f} | {r['server_cpu_s']:.1f} | "
              f"{r['load'][0]:.2f}–{r['load'][1]:.2f} | {'equal' if r['ok'] else 'DIFFERENT'} |")
    print("\nwall: spawn to exit; out MB/s: bytes written / wall; table MB/s: "
          "pg_total_relation_size / wall; peak RSS: the child's VmHWM (max over the runs); "
          "CPU: the child's user+sys; server CPU: PostgreSQL's backends over the run")
    by = {r["tool"]: r for r in results if "skipped" not in r}
    if "medallion" in by:
        for other in ("duckdb", "psql"):
            if other in by:
                print(f"rows/s medallion/{other}: "
                      f"{by['medallion']['rows_per_s'] / by[other]['rows_per_s']:.2f}x")
    f, s = inc["first"], inc["second"]
    print(f"\nincremental (watermark updated_at): first run {f['rows']:,} rows in {f['wall_s']:.2f} s "
          f"({f['rows'] / f['wall_s']:,.0f} rows/s, peak RSS {f['rss'] / 2**20:.0f} MiB); "
          f"UPDATE of {inc['updated']:,} rows (1%) took {inc['update_s']:.1f} s; second run "
          f"appended {s['rows']:,} rows in {s['wall_s']:.2f} s (peak RSS {s['rss'] / 2**20:.0f} MiB); "
          f"bronze {inc['bronze_rows']:,} rows; "
          + ("rows and sums equal PostgreSQL's" if inc["ok"] else
             f"MISMATCH: first {f['got']}, second {s['got']} want {inc['want_second']}"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", help="a medallion binary (default: release, else debug, with `extract`)")
    ap.add_argument("--rows", type=int, default=5_000_000)
    ap.add_argument("--repeat", type=int, default=3, help="runs per tool (medians)")
    ap.add_argument("--tools", default=",".join(TOOLS), help="comma-separated, of: " + ", ".join(TOOLS))
    ap.add_argument("--keep", action="store_true", help="keep the work folder (PostgreSQL data)")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    args = ap.parse_args()
    tools = [t for t in args.tools.split(",") if t]
    if not tools or any(t not in TOOLS for t in tools):
        ap.error(f"--tools: of {', '.join(TOOLS)}")
    import psycopg  # noqa: PLC0415

    ctx = Ctx()
    ctx.bin, build = medallion_bin(args)
    load_start = os.getloadavg()[0]
    ctx.work = Path(tempfile.mkdtemp(prefix="medallion-pg-bench-"))
    ctx.work.chmod(0o755)  # the `postgres` user must reach its folder inside
    skipped = {}
    if "duckdb" in tools:
        ctx.duckdb_ext, why = duckdb_postgres_extension(ctx.work)
        if why:
            skipped["duckdb"] = why
            log(f"skipping duckdb: {why}")
    ctx.pg = PgCluster(ctx.work / "pg", password=PASSWORD, settings=PG_SETTINGS)
    try:
        ctx.pg.start()
        log(f"generating {args.rows:,} rows in PostgreSQL …")
        load_s, (table_bytes, heap_bytes, index_bytes), version = load_table(ctx.pg, psycopg, args.rows)
        ctx.truth = truth(ctx.pg, psycopg)
        ctx.spec = ctx.work / "pipeline.toml"
        ctx.spec.write_text(SPEC)
        ctx.env = {"BENCH_DATABASE_URL": ctx.pg.url()}
        runs = {t: [] for t in tools if t not in skipped}
        order = list(runs)
        for i in range(args.repeat):
            for name in order[i % len(order):] + order[:i % len(order)]:
                m = TOOLS[name][1](ctx, i)
                runs[name].append(m)
                log(f"  {name:<9} run {i + 1}: {m['wall_s']:.2f} s, {m['rows'] / m['wall_s']:,.0f} "
                    f"rows/s, RSS {m['rss'] / 2**20:.0f} MiB, load {m['load']:.2f}, "
                    f"{'ok' if m['got'] == ctx.truth else 'MISMATCH ' + str(m['got'])}")
        log("incremental: first run, 1% updated, second run …")
        inc = incremental(ctx, psycopg)
    finally:
        ctx.pg.stop()
        if not args.keep:
            shutil.rmtree(ctx.work, ignore_errors=True)
    results = [summarize(t, runs[t], ctx.truth[0], table_bytes, ctx.truth) for t in runs]
    results += [dict(tool=t, skipped=why) for t, why in skipped.items()]
    results.sort(key=lambda r: list(TOOLS).index(r["tool"]))
    meta = dict(rows=args.rows, repeat=args.repeat, build=build, binary=str(ctx.bin),
                pg_version=version, table_bytes=table_bytes, heap_bytes=heap_bytes,
                index_bytes=index_bytes, load_s=load_s, load_start=load_start,
                load_end=os.getloadavg()[0], pg_settings=PG_SETTINGS,
                truth={"rows": ctx.truth[0], "sum_amount": str(ctx.truth[1])})
    failed = [r["tool"] for r in results if r.get("ok") is False] + ([] if inc["ok"] else ["incremental"])
    if args.json:
        def plain(o):
            return str(o) if isinstance(o, Decimal) else o
        print(json.dumps(dict(meta=meta, results=results, incremental=inc), indent=2, default=plain))
    else:
        print_report(meta, results, inc)
    if failed:
        log(f"FAILED checks: {', '.join(failed)}")
        sys.exit(1)


if __name__ == "__main__":
    main()
