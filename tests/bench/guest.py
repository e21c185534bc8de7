#!/usr/bin/env python3
"""Guest benchmark: the core as a wasmtime guest vs the core in-process vs DuckDB.

What it measures (medians of --repeat runs, all on this machine, same data, one invocation;
the contenders of a workload run in interleaved rounds, so drifting load hits them alike)
  retail   the retail demo pipeline (examples/retail/pipeline.toml) at --scale, into a fresh lake
           per run: `medallion run --engine guest` (parallel instances, a table each, started
           as the tables it reads are staged), `--engine native` (DataFusion with all cores),
           and DuckDB running the same SQL (bronze read with read_csv/read_json/read_parquet,
           silver SQL + `drop`/`fail` expectations as filters + dedupe as QUALIFY
           row_number(), gold SQL, every table written to Parquet). Wall time of the whole
           process.
  q1, q6   TPC-H Q1 and Q6 over a local SF1 lineitem.parquet: `medallion query --engine guest
           --instances 1` (one instance, one partition) against `--engine native --partitions
           1` (the same work in-process: the per-core guest/native ratio); `--engine guest`
           (the query's scans split into one instance per core, finished in one more) against
           `--engine native` (all cores); and DuckDB (all cores). Each guest row's ratio is to
           the native row of the same parallelism. Time is what `--stats` reports
           (registration + query, in the process), DuckDB's is execute + fetch on a fresh
           connection.
  start    the guest module: compiled from the .wasm (an empty module cache) vs loaded from the
           cache, as `--stats` reports it, and the wall time of `medallion query "SELECT 1"`.
Beside each time: the median CPU time of a run (user + system, every thread; DuckDB's from this
process's clock) with its ratio to native, and the largest peak RSS of the medallion process
over the runs (DuckDB runs inside this script, so it has none). CPU time does not count waiting
for a core, so a wall-time ratio that moved while the CPU ratio held was the scheduling, not the
engine. The load average is printed at both ends.

Not a test: it takes minutes and its numbers depend on the machine. Release builds:
the script runs `cargo build --release --bin medallion` (which also builds the guest with the
`guest` profile) unless --bin is given. Data is cached under ~/.cache/medallion/bench.

Run with the project's venv:  ~/.cache/medallion/venv/bin/python tests/bench/guest.py
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE))
from remote_parquet import QUERIES, duck_connect, ensure_packages, lineitem_file  # noqa: E402


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def medallion_bin(args):
    if args.bin:
        return Path(args.bin)
    target = Path(os.environ.get("CARGO_TARGET_DIR", Path.home() / ".cache/medallion/target"))
    log("building: cargo build --release --bin medallion (and the guest module)")
    subprocess.run(["cargo", "build", "--release", "--bin", "medallion"], cwd=ROOT, check=True,
                   env={**os.environ, "CARGO_TARGET_DIR": str(target)})
    return target / "release" / "medallion"


class Usage:
    """CPU time (user + system, all threads) and peak resident memory of one run. Wall time on
    this shared machine moves with the load; CPU time moves less, so the two ratios together
    say whether a change in wall time was the engine or the machine."""

    def __init__(self, cpu_ms, rss_mib=None):
        self.cpu_ms, self.rss_mib = cpu_ms, rss_mib


class Finished:
    def __init__(self, stdout, stderr, usage):
        self.stdout, self.stderr, self.usage = stdout, stderr, usage


# Runs one command and reports its own wall time, CPU time and peak RSS. It is a separate small
# interpreter because Linux starts a child's peak RSS at its parent's resident size (fork copies
# the memory map, exec keeps its high-water mark): spawned straight from this process, which
# holds DuckDB, every run would report at least this process's few hundred MiB.
MEASURE = r"""
import json, os, subprocess, sys, time
started = time.perf_counter()
child = subprocess.Popen(sys.argv[2:])
_, status, ru = os.wait4(child.pid, 0)
ms = (time.perf_counter() - started) * 1000
with open(sys.argv[1], "w") as f:
    json.dump({"ms": ms, "code": os.waitstatus_to_exitcode(status),
               "cpu_ms": (ru.ru_utime + ru.ru_stime) * 1000, "rss_mib": ru.ru_maxrss / 1024}, f)
"""


def timed(cmd, env=None, cwd=None):
    """Runs `cmd` to its end; its wall ms and a `Finished` with its output and `Usage`."""
    with tempfile.TemporaryDirectory() as tmp:
        files = [Path(tmp) / n for n in ("usage.json", "stdout", "stderr")]
        with open(files[1], "wb") as out, open(files[2], "wb") as err:
            launcher = subprocess.run([sys.executable, "-c", MEASURE, files[0], *map(str, cmd)],
                                      stdout=out, stderr=err, env=env, cwd=cwd)
        if launcher.returncode != 0 or not files[0].exists():
            raise RuntimeError(f"{' '.join(map(str, cmd))} could not be run:\n"
                               f"{files[2].read_text(errors='replace')[-3000:]}")
        m = json.loads(files[0].read_text())
        p = Finished(files[1].read_text(errors="replace"), files[2].read_text(errors="replace"),
                     Usage(m["cpu_ms"], m["rss_mib"]))
    if m["code"] != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed:\n{p.stderr[-3000:]}")
    return m["ms"], p


# ---------------------------------------------------------------------------------------------
# The retail pipeline

def retail_data(bin_, scale, root):
    """Generated once per scale (with a throwaway native run, which is how `demo` makes it)."""
    d = root / f"retail-scale{scale:g}"
    if not (d / "data" / "customers.csv").exists():
        log(f"generating retail data at scale {scale:g} in {d}")
        scratch = tempfile.mkdtemp()
        timed([bin_, "demo", "--dir", d, "--lake", Path(scratch) / "lake", "--scale", str(scale),
               "--engine", "native", "--json"])
        shutil.rmtree(scratch)
    return d


def medallion_run(bin_, spec, engine):
    with tempfile.TemporaryDirectory() as tmp:
        ms, p = timed([bin_, "run", spec, "--lake", Path(tmp) / "lake", "--engine", engine, "--json"])
        report = json.loads(p.stdout)
        gold = {t["table"]: t["rows_out"] for t in report["tables"] if t["layer"] == "gold"}
        return ms, gold, p.usage


def duckdb_pipeline(spec_path):
    """The spec's SQL in DuckDB; every table written to Parquet, like the lake's data files."""
    spec = tomllib.loads(Path(spec_path).read_text())
    base = Path(spec_path).parent
    con = duck_connect(threads=os.cpu_count())
    started, cpu = time.perf_counter(), time.process_time()
    with tempfile.TemporaryDirectory() as out:
        for name, src in spec.get("bronze", {}).items():
            path = str(base / src["path"])
            if path.endswith(".csv"):
                read = f"read_csv('{path}', header=true, ignore_errors=true)"
            elif path.endswith(".ndjson") or path.endswith(".json"):
                read = f"read_json('{path}', format='newline_delimited', ignore_errors=true)"
            else:
                read = f"read_parquet('{path}')"
            con.execute(f"CREATE TABLE {name} AS SELECT *, now() AS _ingested_at FROM {read}")
        for layer in ("silver", "gold"):
            for name, t in spec.get(layer, {}).items():
                sql = f"SELECT * FROM ({t['sql']}) AS t"
                casts = t.get("casts", {})
                if casts:
                    cast = ", ".join(f"TRY_CAST({c} AS {ty.upper()}) AS {c}" for c, ty in casts.items())
                    sql = f"SELECT * REPLACE ({cast}) FROM ({t['sql']}) AS t"
                conds = [e["condition"] for e in t.get("expect", [])
                         if e.get("on_violation", "warn") in ("drop", "fail")]
                if conds:
                    sql += " WHERE " + " AND ".join(f"({c})" for c in conds)
                if "dedupe" in t:
                    key = ", ".join(t["dedupe"]["key"])
                    sql += f" QUALIFY row_number() OVER (PARTITION BY {key} ORDER BY {t['dedupe']['order_by']} DESC) = 1"
                con.execute(f"CREATE TABLE {name} AS {sql}")
        for (name,) in con.execute("SHOW TABLES").fetchall():
            con.execute(f"COPY {name} TO '{out}/{name}.parquet' (FORMAT parquet, COMPRESSION snappy)")
        gold = {n: con.execute(f"SELECT count(*) FROM {n}").fetchone()[0] for n in spec.get("gold", {})}
    ms, cpu = (time.perf_counter() - started) * 1000, (time.process_time() - cpu) * 1000
    con.close()
    # In this process: its CPU clock covers DuckDB's threads; its peak memory is not one run's.
    return ms, gold, Usage(cpu)


# ---------------------------------------------------------------------------------------------
# TPC-H Q1 / Q6 and start-up

def medallion_query(bin_, sql, table, extra, env=None):
    ms, p = timed([bin_, "query", sql, "--table", f"lineitem={table}", "--format", "json",
                   "--stats", *extra], env=env)
    stats = json.loads(p.stderr.strip().splitlines()[-1])
    return stats["ms"], p.usage


def duckdb_query(sql, table):
    con = duck_connect(threads=os.cpu_count())
    con.execute(f"CREATE VIEW lineitem AS SELECT * FROM read_parquet('{table}')")
    started, cpu = time.perf_counter(), time.process_time()
    con.execute(sql).fetchall()
    ms, cpu = (time.perf_counter() - started) * 1000, (time.process_time() - cpu) * 1000
    con.close()
    return ms, Usage(cpu)


def median(xs):
    return statistics.median(xs)


def summary(runs):
    """(median wall ms, median CPU ms, peak RSS MiB) of (ms, Usage) runs; RSS None if unknown."""
    rss = [u.rss_mib for _, u in runs if u.rss_mib is not None]
    return median(r[0] for r in runs), median(u.cpu_ms for _, u in runs), max(rss) if rss else None


def fmt_load(load):
    return " ".join(f"{x:.2f}" for x in load)


def interleaved(contenders, repeat):
    """Runs every contender once per round, starting each round one further along, and returns
    each one's results. On a shared machine the load drifts over minutes; interleaving puts
    every contender under the same drift, so the ratios hold even when the times move."""
    names = list(contenders)
    results = {n: [] for n in names}
    for i in range(repeat):
        for n in names[i % len(names):] + names[:i % len(names)]:
            results[n].append(contenders[n]())
    return results


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", help="a medallion binary (default: build the release one)")
    ap.add_argument("--scale", type=float, default=8, help="retail demo scale (default 8)")
    ap.add_argument("--sf", type=float, default=1, help="TPC-H scale factor (default 1)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--data", default=str(Path.home() / ".cache/medallion/bench"))
    ap.add_argument("--skip", nargs="*", default=[], choices=["retail", "tpch", "start"])
    ap.add_argument("--engines", default="guest,native",
                    help="medallion engines to run, comma-separated (default guest,native; "
                         "native alone needs no guest module); DuckDB always runs")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    # DuckDB's tpch extension (the SF1 data) and pyarrow come as wheels that the venv of
    # tests/run.sh does not hold; without them the first LOAD fails deep inside duck_connect.
    ensure_packages()
    engines = [e for e in args.engines.split(",") if e]
    if not engines or set(engines) - {"guest", "native"}:
        ap.error(f"--engines: guest and/or native, not {args.engines!r}")
    bin_ = medallion_bin(args)
    root = Path(args.data)
    root.mkdir(parents=True, exist_ok=True)
    rows = []  # (workload, engine, median ms, median CPU ms, peak RSS MiB, note)
    load_before = os.getloadavg()

    if "start" not in args.skip and "guest" in engines:
        with tempfile.TemporaryDirectory() as cache:
            env = {**os.environ, "MEDALLION_GUEST_CACHE": cache}
            ms, p = timed([bin_, "query", "SELECT 1 AS one", "--format", "json", "--stats"], env=env)
            cold = json.loads(p.stderr.strip().splitlines()[-1])
            rows.append(("start", "guest, compile (empty cache)", cold["module_ms"], None, None,
                         f"process {ms:.0f} ms"))
            warm = []
            for _ in range(args.repeat):
                ms, p = timed([bin_, "query", "SELECT 1 AS one", "--format", "json", "--stats"], env=env)
                warm.append((json.loads(p.stderr.strip().splitlines()[-1])["module_ms"], ms))
            rows.append(("start", "guest, module cache", median(w[0] for w in warm), None, None,
                         f"process {median(w[1] for w in warm):.0f} ms"))
        ms = median(timed([bin_, "query", "SELECT 1 AS one", "--engine", "native"])[0] for _ in range(args.repeat))
        rows.append(("start", "native", ms, None, None, "process wall time"))

    if "retail" not in args.skip:
        d = retail_data(bin_, args.scale, root)
        spec = d / "pipeline.toml"
        medallion_run(bin_, spec, engines[0])  # warm the module cache and the page cache
        contenders = {e: (lambda e=e: medallion_run(bin_, spec, e)) for e in engines}
        contenders["duckdb"] = lambda: duckdb_pipeline(spec)
        runs = interleaved(contenders, args.repeat)
        gold = {e: rs[0][1] for e, rs in runs.items()}
        if len(engines) == 2 and gold["guest"] != gold["native"]:
            log(f"WARNING: gold row counts differ: {gold['guest']} vs {gold['native']}")
        for engine, rs in runs.items():
            rows.append((f"retail scale {args.scale:g}", engine, *summary([(r[0], r[2]) for r in rs]),
                         f"gold rows {sum(gold[engine].values())}"))

    if "tpch" not in args.skip:
        table = str(lineitem_file(args.sf, root))
        for q in ("q1", "q6"):
            sql = QUERIES[q]
            contenders = {}
            for engine, extra in (("guest, 1 instance", ["--engine", "guest", "--instances", "1"]),
                                  ("native, 1 partition", ["--engine", "native", "--partitions", "1"]),
                                  ("guest", ["--engine", "guest"]),
                                  ("native", ["--engine", "native"])):
                if engine.split(",")[0] in engines:
                    contenders[engine] = lambda extra=extra: medallion_query(bin_, sql, table, extra)
            contenders["duckdb"] = lambda: duckdb_query(sql, table)
            for run in contenders.values():
                run()  # warm the page cache and the module cache
            for engine, runs in interleaved(contenders, args.repeat).items():
                rows.append((f"TPC-H SF{args.sf:g} {q}", engine, *summary(runs), ""))

    # Ratios within each workload: vs the guest's in-process twin, and vs DuckDB; wall time
    # first, then CPU time.
    by = {}
    for w, e, ms, cpu, _, _ in rows:
        by.setdefault(w, {})[e] = (ms, cpu)
    print(f"{'workload':<22} {'engine':<22} {'median ms':>9} {'÷ native':>8} {'÷ duckdb':>8}"
          f" {'CPU ms':>8} {'÷ native':>8} {'peak MiB':>8}  note")
    for w, e, ms, cpu, rss, note in rows:
        # Each engine against native at the same parallelism: one core, or all of them.
        one = e.endswith("1 instance") or e.endswith("1 partition")
        native = by[w].get("native, 1 partition" if one else "native")
        duck = by[w].get("duckdb")
        ratio = lambda a, b: f"{a / b:.2f}x" if a is not None and b else ""  # noqa: E731
        r1 = ratio(ms, native[0]) if native and w != "start" else ""
        r2 = ratio(ms, duck[0]) if duck else ""
        r3 = ratio(cpu, native[1]) if native and w != "start" else ""
        cpu_s = f"{cpu:.0f}" if cpu is not None else ""
        rss_s = f"{rss:.0f}" if rss is not None else ""
        print(f"{w:<22} {e:<22} {ms:>9.0f} {r1:>8} {r2:>8} {cpu_s:>8} {r3:>8} {rss_s:>8}  {note}")
    load_after = os.getloadavg()
    print(f"load average (1, 5, 15 min): {fmt_load(load_before)} at the start, "
          f"{fmt_load(load_after)} at the end; {os.cpu_count()} CPUs")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
