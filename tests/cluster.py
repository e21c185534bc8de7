"""Medallion on a DataFusion Ballista cluster: one scheduler and two executors, each a
`medallion cluster …` process on free loopback ports, built from the same binary.

Usage: python3 tests/cluster.py MEDALLION_BIN        (a binary built with `--features cluster`)

Checked:
  run      the retail demo pipeline (`demo --scale 0.3`'s data) with `run --cluster`: every silver
           and gold table equals the local run's (`demo`, native engine), read by deltalake, row for
           row (`_ingested_at`, the run's clock, left out); each table committed once (version 0).
  more     a fourth day of files (`demo --more` locally), then `run --cluster` again: bronze
           appends, silver and gold take in the new files on the cluster; equal again.
  query    `query --cluster` gives `query`'s answer, value for value: TPC-H Q1 and Q6 over a
           lineitem.parquet (DuckDB's tpch extension, SF 0.05) and aggregates over the demo lake's
           tables (`--lake`), and a Delta table's time travel (`--table t=PATH@0`); Q6 and a gold
           table over HTTP (tests/rangeserve.py), which the scheduler and executors read through
           Medallion's storage.
  kill     a run into a fresh lake, one executor SIGKILLed as soon as the run reaches silver:
           the run either completes (Ballista reruns the lost tasks) or fails naming the Ballista
           job; either way every table deltalake opens is at a version whose files all exist and
           that equals a whole table (nothing half-built), and after the scheduler drops the
           lost executor the next run succeeds with gold equal to the local run's.
  errors   `--cluster` at a port where no scheduler listens fails at once, naming the address.

Every process this script starts is stopped at the end, whatever happens.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import deltalake
import duckdb
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent / "bench"))
from remote_parquet import duck_connect  # noqa: E402 - DuckDB with its extensions from the venv
sys.path.insert(0, str(Path(__file__).resolve().parent))
from delta_readers import load_duckdb_delta  # noqa: E402

EXECUTOR_TIMEOUT = 5  # seconds; the scheduler drops a silent executor after this
PROCS: list[subprocess.Popen] = []
FAILURES: list[str] = []


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def fail(msg):
    FAILURES.append(msg)
    log(f"FAIL: {msg}")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(bin_, args, log_path):
    out = open(log_path, "w")
    p = subprocess.Popen([str(bin_), *map(str, args)], stdout=out, stderr=subprocess.STDOUT,
                         start_new_session=True)
    PROCS.append(p)
    return p


def stop_all():
    for p in PROCS:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.time() + 10
    for p in PROCS:
        try:
            p.wait(timeout=max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def medallion(bin_, args, check=True, timeout=600):
    p = subprocess.run([bin_, *map(str, args)], capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise RuntimeError(f"medallion {' '.join(map(str, args))} failed ({p.returncode}):\n"
                           f"{p.stderr[-4000:]}")
    return p


def wait_ready(bin_, url, timeout=90):
    """The cluster answers once the scheduler listens and an executor has registered."""
    deadline = time.time() + timeout
    last = ""
    while time.time() < deadline:
        try:
            p = medallion(bin_, ["query", "SELECT 1 AS one", "--cluster", url, "--format", "json"],
                          check=False, timeout=30)
            if p.returncode == 0:
                return
            last = p.stderr
        except subprocess.TimeoutExpired:
            last = "timed out"
        time.sleep(0.5)
    raise RuntimeError(f"the cluster at {url} did not answer within {timeout} s: {last[-2000:]}")


def table_dirs(lake):
    return sorted(p.parent for p in Path(lake).glob("*/*/_delta_log"))


# The run's clock, which no two runs share (silver.order_lines carries bronze's as ingested_at).
CLOCK_COLUMNS = ("_ingested_at", "ingested_at")


def rows(path, drop=CLOCK_COLUMNS):
    t = deltalake.DeltaTable(str(path)).to_pyarrow_table()
    cols = [c for c in t.column_names if c not in drop]
    t = t.select(cols)
    return cols, sorted(tuple(r[c] for c in cols) for r in t.to_pylist())


def compare_lakes(label, want_lake, got_lake, layers=("silver", "gold")):
    n = 0
    for layer in layers:
        for want in sorted(Path(want_lake, layer).glob("*/_delta_log")):
            name = want.parent.name
            got = Path(got_lake, layer, name)
            if not (got / "_delta_log").exists():
                fail(f"{label}: {layer}.{name} missing from the cluster's lake")
                continue
            wc, wr = rows(want.parent)
            gc, gr = rows(got)
            if wc != gc:
                fail(f"{label}: {layer}.{name} columns {gc} != {wc}")
            elif wr != gr:
                diff = [r for r in gr if r not in set(wr)][:3]
                fail(f"{label}: {layer}.{name}: {len(gr)} rows vs {len(wr)} locally; "
                     f"e.g. only on the cluster: {diff}")
            n += 1
    log(f"{label}: {n} silver/gold tables equal to the local run's")
    return n


def check_consistent(label, lake):
    """Every table opens at its latest version, all of whose files exist, and reads whole."""
    for t in table_dirs(lake):
        try:
            dt = deltalake.DeltaTable(str(t))
            missing = [f for f in dt.file_uris() if not Path(f.removeprefix("file://")).exists()]
            if missing:
                fail(f"{label}: {t} v{dt.version()} names missing files {missing[:2]}")
            n = dt.to_pyarrow_table().num_rows
            duck = DUCK.execute(f"SELECT count(*) FROM delta_scan('{t}')").fetchone()[0]
            if duck != n:
                fail(f"{label}: {t}: DuckDB reads {duck} rows, deltalake {n}")
        except Exception as e:  # noqa: BLE001 - any unreadable table is the failure reported
            fail(f"{label}: {t} unreadable: {e}")


def executor_files(label, lake, report):
    """Gold's data files were written by the executors (in an `executors-<uuid>/` folder of
    the table), and what the client recorded of them from their footers holds: the `add`
    stats' row counts sum to the rows deltalake reads, and each column's minValues/maxValues
    bound what DuckDB reads from the table."""
    by_table = {t["table"]: t for t in report["tables"]}
    for log_dir in sorted(Path(lake, "gold").glob("*/_delta_log")):
        t = log_dir.parent
        refresh = by_table.get(t.name, {}).get("refresh") or ""
        if "executors" not in refresh:
            fail(f"{label}: gold.{t.name} report does not say executors wrote it: {refresh!r}")
        dt = deltalake.DeltaTable(str(t))
        adds = pa.table(dt.get_add_actions(flatten=True)).to_pylist()
        paths = [a["path"] for a in adds]
        if not paths or not all(p.startswith("executors-") for p in paths):
            fail(f"{label}: gold.{t.name} files not written by executors: {paths[:3]}")
        n = dt.to_pyarrow_table().num_rows
        counted = sum(a["num_records"] for a in adds)
        if counted != n:
            fail(f"{label}: gold.{t.name}: add stats count {counted} rows, deltalake reads {n}")
        checked = 0
        for key in adds[0] if adds else {}:
            if not key.startswith("min."):
                continue
            col = key[4:]
            lo = min((a[key] for a in adds if a.get(key) is not None), default=None)
            hi = max((a[f"max.{col}"] for a in adds if a.get(f"max.{col}") is not None), default=None)
            if lo is None:
                continue
            got = DUCK.execute(f'SELECT min("{col}"), max("{col}") FROM delta_scan(\'{t}\')').fetchone()
            if not (lo <= got[0] and got[1] <= hi):
                fail(f"{label}: gold.{t.name}.{col}: stats [{lo}, {hi}] do not bound DuckDB's [{got[0]}, {got[1]}]")
            checked += 1
        log(f"{label}: gold.{t.name}: {len(paths)} file(s) written by executors, {n} rows, "
            f"bounds of {checked} column(s) hold")


DUCK = None  # a DuckDB connection with the delta extension

Q1 = """SELECT l_returnflag, l_linestatus, sum(l_quantity) AS sum_qty,
  sum(l_extendedprice) AS sum_base_price,
  sum(l_extendedprice * (1 - l_discount)) AS sum_disc_price,
  sum(l_extendedprice * (1 - l_discount) * (1 + l_tax)) AS sum_charge,
  avg(l_quantity) AS avg_qty, avg(l_extendedprice) AS avg_price, avg(l_discount) AS avg_disc,
  count(*) AS count_order
FROM lineitem WHERE l_shipdate <= DATE '1998-12-01' - INTERVAL '90' DAY
GROUP BY l_returnflag, l_linestatus ORDER BY l_returnflag, l_linestatus"""

Q6 = """SELECT sum(l_extendedprice * l_discount) AS revenue FROM lineitem
WHERE l_shipdate >= DATE '1994-01-01' AND l_shipdate < DATE '1995-01-01'
  AND l_discount BETWEEN 0.05 AND 0.07 AND l_quantity < 24"""

LAKE_SQL = {
    "lines by status": """SELECT status, count(*) AS n, sum(quantity) AS units,
        round(sum(amount), 2) AS revenue FROM order_lines GROUP BY status ORDER BY status""",
    "segments": "SELECT segment, count(*) AS n FROM customer_segments GROUP BY segment ORDER BY segment",
    "join": """SELECT p.category, count(*) AS n FROM order_lines l JOIN products p
        ON l.product_id = p.product_id GROUP BY p.category ORDER BY p.category""",
}


def query_json(bin_, sql, extra):
    p = medallion(bin_, ["query", sql, "--format", "json", *extra])
    return json.loads(p.stdout or "[]")


def main():
    global DUCK
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    bin_ = sys.argv[1]
    DUCK = duckdb.connect()
    load_duckdb_delta(DUCK)
    work = Path(tempfile.mkdtemp(prefix="medallion-cluster-"))
    try:
        run_checks(bin_, work)
    finally:
        stop_all()
        shutil.rmtree(work, ignore_errors=True)
    if FAILURES:
        log(f"\n{len(FAILURES)} failure(s):")
        for f in FAILURES:
            log(f"  - {f}")
        sys.exit(1)
    log("cluster: all checks passed")


def run_checks(bin_, work):
    data, local = work / "retail", work / "local"
    t = time.time()
    medallion(bin_, ["demo", "--dir", data, "--lake", local, "--scale", "0.3", "--engine", "native",
                     "--json"])
    log(f"local run (demo --scale 0.3, native): {time.time() - t:.1f} s")

    sport = free_port()
    url = f"df://127.0.0.1:{sport}"
    start(bin_, ["cluster", "scheduler", "--port", str(sport),
                 "--executor-timeout", str(EXECUTOR_TIMEOUT)], work / "scheduler.log")
    executors = []
    for i in range(2):
        fport, gport = free_port(), free_port()
        executors.append(start(bin_, ["cluster", "executor", "--scheduler", f"127.0.0.1:{sport}",
                                      "--port", str(fport), "--grpc-port", str(gport),
                                      "--work-dir", str(work / f"executor{i}"), "--heartbeat", "1"],
                               work / f"executor{i}.log"))
    try:
        wait_ready(bin_, url)
        log(f"cluster up: scheduler {url}, executors {[p.pid for p in executors]}")
        checks(bin_, work, data, local, url, executors)
    except Exception:
        for f in sorted(work.glob("*.log")):
            log(f"--- {f.name} (last lines)")
            log("\n".join(f.read_text(errors="replace").splitlines()[-15:]))
        raise


def checks(bin_, work, data, local, url, executors):
    spec = data / "pipeline.toml"
    lake = work / "cluster"

    # run: the demo's first three days on the cluster.
    t = time.time()
    p = medallion(bin_, ["run", spec, "--lake", lake, "--cluster", url, "--json"])
    report = json.loads(p.stdout)
    log(f"cluster run: {time.time() - t:.1f} s")
    if not report.get("ok"):
        fail(f"run --cluster report not ok: {report}")
    versions = {t["table"]: t.get("version") for t in report["tables"]}
    once = {n: v for n, v in versions.items() if v not in (0, None)}
    if once:
        fail(f"first run committed versions other than 0: {once}")
    compare_lakes("run", local, lake)
    executor_files("run", lake, report)

    # more: a fourth day, incremental on both sides.
    medallion(bin_, ["demo", "--dir", data, "--lake", local, "--scale", "0.3", "--more",
                     "--engine", "native", "--json"])
    p = medallion(bin_, ["run", spec, "--lake", lake, "--cluster", url, "--json"])
    report = json.loads(p.stdout)
    refresh = {t["table"]: t.get("refresh") for t in report["tables"] if t.get("refresh")}
    log(f"second cluster run: {refresh}")
    compare_lakes("more", local, lake)

    # query: TPC-H Q1/Q6 and the lake's tables, cluster vs local.
    lineitem = work / "lineitem.parquet"
    con = duck_connect("tpch")
    con.execute("CALL dbgen(sf = 0.05)")
    con.execute(f"COPY lineitem TO '{lineitem}' (FORMAT parquet)")
    con.close()
    for name, sql in (("Q1", Q1), ("Q6", Q6)):
        table = ["--table", f"lineitem={lineitem}"]
        want = query_json(bin_, sql, [*table, "--engine", "native"])
        got = query_json(bin_, sql, [*table, "--cluster", url])
        if got != want or not want:
            fail(f"query {name}: cluster {got[:2]} != local {want[:2]}")
        else:
            log(f"query {name}: {len(got)} row(s) equal, e.g. {got[0]}")
    for name, sql in LAKE_SQL.items():
        want = query_json(bin_, sql, ["--lake", local, "--engine", "native"])
        got = query_json(bin_, sql, ["--lake", lake, "--cluster", url])
        if got != want or not want:
            fail(f"query {name}: cluster {got[:3]} != local {want[:3]}")
    t0 = lake / "silver" / "order_lines"
    want = query_json(bin_, "SELECT count(*) AS n FROM t", ["--table", f"t={t0}@0", "--engine", "native"])
    got = query_json(bin_, "SELECT count(*) AS n FROM t", ["--table", f"t={t0}@0", "--cluster", url])
    if got != want:
        fail(f"query time travel: cluster {got} != local {want}")
    log(f"query: lake aggregates and time travel equal ({len(LAKE_SQL)} queries, v0 {got})")

    # http: the executors and scheduler read over HTTP through Medallion's storage.
    port_file = work / "http.port"
    start(sys.executable, [str(Path(__file__).resolve().parent / "rangeserve.py"), str(work),
                           "--port-file", str(port_file)], work / "http.log")
    deadline = time.time() + 30
    while not (port_file.exists() and port_file.read_text().strip()) and time.time() < deadline:
        time.sleep(0.1)
    base = f"http://127.0.0.1:{port_file.read_text().strip()}"
    for name, sql, table in (
        ("Q6 over HTTP", Q6, f"lineitem={base}/lineitem.parquet"),
        ("gold over HTTP", "SELECT region, sum(revenue) AS r FROM g GROUP BY region ORDER BY region",
         f"g={base}/cluster/gold/sales_by_region_day"),
    ):
        want = query_json(bin_, sql, ["--table", table, "--engine", "native"])
        got = query_json(bin_, sql, ["--table", table, "--cluster", url])
        if got != want or not want:
            fail(f"query {name}: cluster {got[:2]} != local {want[:2]}")
        else:
            log(f"query {name}: equal, {got[:1]}")

    # errors: no scheduler there.
    dead = f"df://127.0.0.1:{free_port()}"
    p = medallion(bin_, ["query", "SELECT 1", "--cluster", dead], check=False, timeout=60)
    if p.returncode == 0 or dead not in p.stderr:
        fail(f"--cluster {dead}: expected an error naming it, got {p.returncode}: {p.stderr[-500:]}")

    # kill: an executor SIGKILLed while silver is being built.
    kill_lake = work / "killed"
    run = subprocess.Popen([bin_, "run", str(spec), "--lake", str(kill_lake), "--cluster", url,
                            "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    PROCS.append(run)
    victim = executors[1]
    deadline = time.time() + 300
    while time.time() < deadline and run.poll() is None:
        if any(Path(kill_lake, "silver").glob("*/*.parquet")):
            break
        time.sleep(0.02)
    killed_mid_run = run.poll() is None
    victim.kill()
    victim.wait()
    out, err = run.communicate(timeout=600)
    log(f"kill: executor {victim.pid} killed {'during' if killed_mid_run else 'after'} the run; "
        f"run exit {run.returncode}")
    if not killed_mid_run:
        fail("kill: the run ended before the executor could be killed (nothing tested)")
    if run.returncode != 0:
        first = err.strip().splitlines()[:3]
        log(f"kill: the run failed: {first}")
        if "Job" not in err and "job" not in err:
            fail(f"kill: the failed run's error names no Ballista job: {err[-1500:]}")
        if "no table was changed" not in err:
            fail(f"kill: the failed run does not say that no table was changed: {err[-1500:]}")
        committed = [t for t in table_dirs(kill_lake)]
        if committed:
            fail(f"kill: a failed run left committed tables: {committed}")
    else:
        log("kill: Ballista completed the run on the remaining executor")
        compare_lakes("kill (run completed)", local, kill_lake)
    check_consistent("kill", kill_lake)
    # Ballista drops the lost executor after its heartbeat timeout; then the next run succeeds.
    time.sleep(EXECUTOR_TIMEOUT + 3)
    p = medallion(bin_, ["run", spec, "--lake", kill_lake, "--cluster", url, "--json"])
    if not json.loads(p.stdout).get("ok"):
        fail("kill: the next run was not ok")
    check_consistent("kill, next run", kill_lake)
    compare_lakes("kill, next run", local, kill_lake)


if __name__ == "__main__":
    main()
