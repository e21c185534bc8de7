#!/usr/bin/env python3
"""Streaming benchmark: `medallion run --watch` vs a DuckDB + deltalake micro-batch loop.

The workload (the same bytes for both engines, generated with a fixed seed)
  products.csv     --products products, each with a reorder level
  inventory/*.csv  a producer writes one file every 100 ms for --seconds seconds, each with
                   rate/10 inventory events (seq, product_id, warehouse, qty), written elsewhere and
                   renamed into the watched folder; an event's time is its file's rename
  pipeline         bronze (both sources) -> silver `inventory` (latest event per product and
                   warehouse: dedupe by key, newest seq) -> gold `low_stock` (qty below the reorder
                   level), which declares an alert keyed by (product_id, warehouse)

What it measures, per offered rate (--rates, events/s), for each engine in turn (never at once)
  latency    event -> alert: from the rename of the file holding the event that made a key low to
             the alert for it reaching the benchmark (medallion: a line on the pipe of
             `--alerts -`; the peer: computed in its own process), p50 and p99
  rows/s     sustained bronze -> gold throughput: events produced / time from the producer's
             start until the engine has committed gold over the last file; the offered rate is
             the ceiling, a lower figure means the engine fell behind
  load       os.getloadavg() before and after the engine's run (2 shared cores here)

The peer: DuckDB (the venv's duckdb) runs the same SQL in a loop every --trigger-interval over
the files it has not seen yet: read_csv of the new files -> deltalake.write_deltalake append
(bronze), the dedupe as QUALIFY row_number() over all of bronze -> overwrite (silver), the gold
SQL -> overwrite (gold), then an anti join of the new gold against the previous one (kept in
memory) for the alerts. What it does not do that Medallion does: exactly-once across restarts
(its list of seen files lives in memory), alert state on disk, re-reading its silver from Delta
(it keeps the Arrow table), statistics and checkpoints in the log.

Not a test: it takes minutes and its figures depend on the machine. Release build:
`cargo build --release --bin medallion` unless --bin is given (--bin for a debug build, which
is several times slower).

Run with the project's venv:  ~/.cache/medallion/venv/bin/python tests/bench/streaming.py
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
WAREHOUSES = ["north", "south", "east", "west"]
FILES_PER_SECOND = 10
# An event's seq is file * SEQ_PER_FILE + its line: unique (dedupe has no ties), and it names
# the file the event came in.
SEQ_PER_FILE = 1_000_000

SPEC = """
[pipeline]
name = "stream_bench"

[bronze.products_raw]
path = "products.csv"
schema = { product_id = "bigint", name = "string", reorder_level = "bigint" }

[bronze.inventory_raw]
path = "inventory/*.csv"
schema = { seq = "bigint", product_id = "bigint", warehouse = "string", qty = "bigint" }

[silver.inventory]
sql = "SELECT seq, product_id, warehouse, qty FROM inventory_raw"
dedupe = { key = ["product_id", "warehouse"], order_by = "seq" }

[gold.low_stock]
sql = \"\"\"
SELECT i.product_id, i.warehouse, i.qty, i.seq, p.reorder_level
FROM inventory i JOIN products_raw p USING (product_id)
WHERE i.qty < p.reorder_level
\"\"\"
alert = { key = ["product_id", "warehouse"] }
"""

GOLD_SQL = """
SELECT i.product_id, i.warehouse, i.qty, i.seq, p.reorder_level
FROM inventory i JOIN products_raw p USING (product_id)
WHERE i.qty < p.reorder_level
"""
SILVER_SQL = """
SELECT seq, product_id, warehouse, qty FROM inventory_raw
QUALIFY row_number() OVER (PARTITION BY product_id, warehouse ORDER BY seq DESC) = 1
"""
INVENTORY_COLUMNS = "{'seq': 'BIGINT', 'product_id': 'BIGINT', 'warehouse': 'VARCHAR', 'qty': 'BIGINT'}"


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def medallion_bin(args):
    if args.bin:
        return Path(args.bin)
    target = Path(os.environ.get("CARGO_TARGET_DIR", Path.home() / ".cache/medallion/target"))
    log("building: cargo build --release --bin medallion")
    subprocess.run(["cargo", "build", "--release", "--bin", "medallion"], cwd=ROOT, check=True,
                   env={**os.environ, "CARGO_TARGET_DIR": str(target)})
    return target / "release" / "medallion"


def prepare(root: Path, products: int):
    """The spec, products, and a first inventory file (every key well stocked)."""
    root.mkdir(parents=True)
    (root / "pipeline.toml").write_text(SPEC)
    rng = random.Random(7)
    with open(root / "products.csv", "w") as f:
        f.write("product_id,name,reorder_level\n")
        for p in range(products):
            f.write(f"{p},product {p},{rng.randint(5, 30)}\n")
    (root / "inventory").mkdir()
    with open(root / "inventory" / f"{0:07d}.csv", "w") as f:
        f.write("seq,product_id,warehouse,qty\n")
        for p in range(products):
            for w in WAREHOUSES:
                f.write(f"0,{p},{w},100\n")


def file_batches(per_file: int, count: int, products: int, seed: int):
    """The producer's files: (file number from 1, csv text)."""
    rng = random.Random(seed)
    out = []
    for n in range(1, count + 1):
        lines = ["seq,product_id,warehouse,qty"]
        for i in range(per_file):
            # Mostly restocks and sales well above the reorder level; about 3% below it.
            qty = rng.randint(0, 29) if rng.random() < 0.03 else rng.randint(31, 500)
            seq = n * SEQ_PER_FILE + i
            lines.append(f"{seq},{rng.randrange(products)},{rng.choice(WAREHOUSES)},{qty}")
        out.append((n, "\n".join(lines) + "\n"))
    return out


class Producer(threading.Thread):
    """Renames one file into the watched folder every 1/FILES_PER_SECOND s, on a fixed clock
    (or all at once: a burst)."""

    def __init__(self, folder: Path, files, burst=False):
        super().__init__(daemon=True)
        self.folder, self.files, self.burst = folder, files, burst
        self.dropped: dict[int, float] = {}
        self.started = None

    def run(self):
        if self.burst:
            # Written first, then renamed in one go: the clock starts at the renames.
            for n, text in self.files:
                (self.folder / f".{n:07d}.tmp").write_text(text)
            self.started = time.time()
            for n, _ in self.files:
                os.rename(self.folder / f".{n:07d}.tmp", self.folder / f"{n:07d}.csv")
                self.dropped[n] = time.time()
            return
        self.started = time.time()
        for i, (n, text) in enumerate(self.files):
            due = self.started + i / FILES_PER_SECOND
            time.sleep(max(0.0, due - time.time()))
            tmp = self.folder / f".{n:07d}.tmp"
            tmp.write_text(text)
            os.rename(tmp, self.folder / f"{n:07d}.csv")
            self.dropped[n] = time.time()


def first_alert_latencies(alerts, dropped):
    """ms from each alerting event's file drop to its alert (alerts: (received_at, seq))."""
    return [(at - dropped[seq // SEQ_PER_FILE]) * 1000 for at, seq in alerts
            if seq // SEQ_PER_FILE in dropped]


def pct(values, p):
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def run_medallion(bin_, root: Path, files, interval_ms: int, burst: bool):
    lake = root / "lake"
    proc = subprocess.Popen(
        [str(bin_), "run", "pipeline.toml", "--lake", str(lake), "--watch", "--json",
         "--alerts", "-", "--trigger-interval", f"{interval_ms}ms"],
        cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)
    alerts, ingested, done = [], [0], threading.Event()
    started_evt = threading.Event()
    finished_at = [None]
    total = len(files)
    stderr_tail = []

    def read_stdout():
        for line in proc.stdout:
            now = time.time()
            try:
                e = json.loads(line)
            except ValueError:
                continue
            if "key" in e and "row" in e:
                alerts.append((now, e["row"]["seq"]))
            elif e.get("event") == "started":
                started_evt.set()
            elif e.get("event") == "batch":
                n = e.get("ingested", {}).get("inventory_raw", 0)
                ingested[0] += n
                # The first file (seq 0) is the initial stock, not part of the producer's load.
                if ingested[0] >= total + 1 and finished_at[0] is None:
                    finished_at[0] = now
                    done.set()

    def read_stderr():
        for line in proc.stderr:
            stderr_tail.append(line)
            del stderr_tail[:-20]

    threading.Thread(target=read_stdout, daemon=True).start()
    threading.Thread(target=read_stderr, daemon=True).start()
    if not started_evt.wait(120):
        proc.kill()
        raise RuntimeError("medallion did not start:\n" + "".join(stderr_tail))
    # The initial stock and products in the first batches, before the clock starts.
    while ingested[0] < 1:
        time.sleep(0.05)
    alerts.clear()
    producer = Producer(root / "inventory", files, burst)
    producer.start()
    producer.join()
    if not done.wait(600):
        log("medallion did not catch up within 10 minutes:\n" + "".join(stderr_tail))
    proc.terminate()
    proc.wait(60)
    end = finished_at[0] or time.time()
    return producer, alerts, end


def run_duckdb(root: Path, files, interval_ms: int, burst: bool):
    import duckdb
    import pyarrow as pa
    from deltalake import DeltaTable, write_deltalake

    lake = root / "duck-lake"
    folder = root / "inventory"
    con = duckdb.connect()
    products = con.execute(
        f"SELECT * FROM read_csv('{root / 'products.csv'}', header=true, "
        "columns={'product_id': 'BIGINT', 'name': 'VARCHAR', 'reorder_level': 'BIGINT'})").to_arrow_table()
    write_deltalake(str(lake / "bronze/products_raw"), products, mode="overwrite")
    con.register("products_raw", products)
    seen: set[str] = set()
    alerts = []
    previous_gold = None
    total = len(files) + 1
    state = {"ingested": 0, "end": None}
    producer = Producer(folder, files, burst)

    def batch():
        nonlocal previous_gold
        new = sorted(f for f in os.listdir(folder) if f.endswith(".csv") and f not in seen)[:100]
        if not new:
            return
        paths = ", ".join(f"'{folder / f}'" for f in new)
        rows = con.execute(
            f"SELECT *, now() AS _ingested_at, filename AS _source_file FROM read_csv([{paths}], "
            f"header=true, columns={INVENTORY_COLUMNS}, filename=true)").to_arrow_table()
        write_deltalake(str(lake / "bronze/inventory_raw"), rows, mode="append")
        bronze = DeltaTable(str(lake / "bronze/inventory_raw")).to_pyarrow_dataset()
        con.register("inventory_raw", bronze)
        silver = con.execute(SILVER_SQL).to_arrow_table()
        write_deltalake(str(lake / "silver/inventory"), silver, mode="overwrite")
        con.register("inventory", silver)
        gold = con.execute(GOLD_SQL).to_arrow_table()
        write_deltalake(str(lake / "gold/low_stock"), gold, mode="overwrite")
        con.register("cur", gold)
        if previous_gold is None:
            fresh = con.execute("SELECT seq FROM cur").fetchall()
        else:
            con.register("prev", previous_gold)
            fresh = con.execute(
                "SELECT c.seq FROM cur c ANTI JOIN prev p "
                "ON c.product_id = p.product_id AND c.warehouse = p.warehouse").fetchall()
        now = time.time()
        alerts.extend((now, seq) for (seq,) in fresh)
        previous_gold = gold
        seen.update(new)
        state["ingested"] += len(new)
        if state["ingested"] >= total and state["end"] is None:
            state["end"] = now

    # The initial stock first, then the clock starts.
    batch()
    alerts.clear()
    producer.start()
    deadline = time.time() + len(files) / FILES_PER_SECOND + 600
    while state["end"] is None and time.time() < deadline:
        t0 = time.time()
        batch()
        if state["end"] is None:
            time.sleep(max(0.0, interval_ms / 1000 - (time.time() - t0)))
    producer.join()
    return producer, alerts, state["end"] or time.time()


def gold_count_medallion(bin_, root):
    p = subprocess.run([str(bin_), "query", "SELECT count(*) AS n FROM low_stock", "--lake",
                        str(root / "lake"), "--format", "csv", "--engine", "native"],
                       capture_output=True, text=True, check=True)
    return int(p.stdout.split()[-1])


def gold_count_duckdb(root):
    from deltalake import DeltaTable
    return DeltaTable(str(root / "duck-lake/gold/low_stock")).to_pyarrow_table().num_rows


def one_run(engine, bin_, load, args, workdir):
    """load: an offered rate (events/s), or ("burst", events)."""
    burst = isinstance(load, tuple)
    root = Path(tempfile.mkdtemp(dir=workdir, prefix=f"{engine}-"))
    shutil.rmtree(root)
    prepare(root, args.products)
    if burst:
        per_file = 1000
        files = file_batches(per_file, max(1, load[1] // per_file), args.products, seed=1)
    else:
        per_file = max(1, load // FILES_PER_SECOND)
        files = file_batches(per_file, int(args.seconds * FILES_PER_SECOND), args.products,
                             seed=load)
    events = per_file * len(files)
    load_before = os.getloadavg()[0]
    if engine == "medallion":
        producer, alerts, end = run_medallion(bin_, root, files, args.trigger_interval, burst)
        gold = gold_count_medallion(bin_, root)
    else:
        producer, alerts, end = run_duckdb(root, files, args.trigger_interval, burst)
        gold = gold_count_duckdb(root)
    load_after = os.getloadavg()[0]
    lat = first_alert_latencies(alerts, producer.dropped)
    result = {
        "engine": engine, "load_kind": label(load), "events": events,
        "rows_per_s": events / (end - producer.started),
        "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99), "alerts": len(lat),
        "gold_rows": gold, "load": (load_before, load_after),
    }
    log(f"  {engine:<9} {label(load):>12}: {result['rows_per_s']:>8.0f} rows/s, alert p50 "
        f"{result['p50_ms']:.0f} ms p99 {result['p99_ms']:.0f} ms ({len(lat)} alerts), "
        f"gold {gold} rows, load {load_before:.2f} -> {load_after:.2f}")
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    return result


def label(load):
    return f"burst {load[1]}" if isinstance(load, tuple) else f"{load}/s"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", help="a medallion binary (default: build the release one)")
    ap.add_argument("--rates", default="1000,10000", help="offered events/s, comma-separated")
    ap.add_argument("--seconds", type=float, default=30.0, help="how long the producer runs")
    ap.add_argument("--burst-events", type=int, default=1_000_000,
                    help="also: this many events dropped at once, for the drain rate (0: skip)")
    ap.add_argument("--products", type=int, default=5000)
    ap.add_argument("--trigger-interval", type=int, default=200, help="ms, both engines")
    ap.add_argument("--repeat", type=int, default=1, help="runs per engine and load (medians)")
    ap.add_argument("--keep", action="store_true", help="keep the work folders")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    args = ap.parse_args()
    bin_ = medallion_bin(args)
    workdir = Path(tempfile.mkdtemp(prefix="medallion-streaming-"))
    loads = [int(r) for r in args.rates.split(",") if r]
    if args.burst_events:
        loads.append(("burst", args.burst_events))
    rows = []
    for load in loads:
        for engine in ["medallion", "duckdb"]:
            runs = [one_run(engine, bin_, load, args, workdir) for _ in range(args.repeat)]
            med = {k: statistics.median(r[k] for r in runs)
                   for k in ["rows_per_s", "p50_ms", "p99_ms", "alerts", "gold_rows"]}
            med.update(engine=engine, load_kind=label(load), load=runs[-1]["load"],
                       events=runs[0]["events"])
            rows.append(med)
    shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"\n{args.seconds:g} s per rate, {args.products} products x {len(WAREHOUSES)} "
          f"warehouses, trigger {args.trigger_interval} ms, medians of {args.repeat}, "
          f"{os.cpu_count()} cores\n")
    print("| offered | engine | rows/s bronze→gold | alert p50 | alert p99 | alerts | gold rows "
          "| load 1 min (before → after) |")
    print("| ---: | --- | ---: | ---: | ---: | ---: | ---: | --- |")
    for r in rows:
        print(f"| {r['load_kind']} | {r['engine']} | {r['rows_per_s']:.0f} | {r['p50_ms']:.0f} ms | "
              f"{r['p99_ms']:.0f} ms | {r['alerts']:.0f} | {r['gold_rows']:.0f} | "
              f"{r['load'][0]:.2f} → {r['load'][1]:.2f} |")
    print()
    for kind in dict.fromkeys(r["load_kind"] for r in rows):
        m = next(r for r in rows if r["load_kind"] == kind and r["engine"] == "medallion")
        d = next(r for r in rows if r["load_kind"] == kind and r["engine"] == "duckdb")
        print(f"{kind}: rows/s medallion/duckdb {m['rows_per_s'] / d['rows_per_s']:.2f}x, "
              f"alert p99 medallion/duckdb {m['p99_ms'] / d['p99_ms']:.2f}x")


if __name__ == "__main__":
    main()
