"""CDC end-to-end lag: a change committed in PostgreSQL → the commit of bronze that holds it.

Starts a throwaway PostgreSQL (tests/pg_cluster.py), takes the initial snapshot of an orders
table, then runs `medallion extract --follow --json` while a writer commits inserts and updates
at a steady rate (1k and 10k changes/s by default, 10 transactions per second per 1k). Every
JSON line is one bronze commit with the PostgreSQL commit times of its oldest and newest
transaction; the lag of a change is the time its bronze commit was printed minus its
transaction's commit time (same machine, same clock). Reported: p50/p99/max of the per-commit
worst lag (the oldest transaction of each commit: an upper bound for every change in it), the
changes/s bronze sustained, and the load.

Usage: python3 tests/bench/cdc_lag.py MEDALLION_BIN [--rates 1000,10000] [--seconds 20]
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pg_cluster import PgCluster  # noqa: E402

SPEC = """[pipeline]
name = "lag"
[sources.shop]
kind = "postgres"
url = "env:SHOP_DATABASE_URL"
[bronze.orders_cdc]
source = "shop"
table = "public.orders"
mode = "cdc"
create_slot = true
"""


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))] if xs else float("nan")


def writer(pg, rate, seconds, first_id, done):
    """`rate` changes/s as 100 transactions/s of rate/100 changes (half inserts, half updates)."""
    per_txn = max(2, rate // 100)
    made = 0
    with psycopg.connect(pg.dsn(), autocommit=True) as c:
        start = time.time()
        n, next_id = 0, first_id
        while time.time() - start < seconds:
            ins = per_txn // 2
            with c.transaction():
                c.execute("INSERT INTO orders SELECT g, 'new', 1.5, now() FROM generate_series(%s::int8, %s::int8) g",
                          (next_id, next_id + ins - 1))
                c.execute("UPDATE orders SET status = 'paid' WHERE id BETWEEN %s::int8 AND %s::int8",
                          (next_id - ins, next_id - 1))
            made += ins + min(ins, max(0, next_id - first_id))
            next_id += ins
            n += 1
            sleep = start + n / 100 - time.time()
            if sleep > 0:
                time.sleep(sleep)
    done.append(made)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("medallion")
    ap.add_argument("--rates", default="1000,10000")
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--batch-interval", default="100ms")
    args = ap.parse_args()
    bin_ = Path(args.medallion).resolve()
    work = Path(tempfile.mkdtemp(prefix="medallion-cdclag-"))
    work.chmod(0o755)
    pg = PgCluster(work / "pg", password="lag-pw", settings={"wal_level": "logical"})
    rows = []
    try:
        pg.start()
        with psycopg.connect(pg.dsn(), autocommit=True) as c:
            c.execute("CREATE TABLE orders (id int8 PRIMARY KEY, status text, total numeric(10,2), ts timestamptz)")
            c.execute("INSERT INTO orders SELECT g, 'new', 1, now() FROM generate_series(1, 1000) g")
        spec = work / "lag.toml"
        spec.write_text(SPEC)
        env = {**os.environ, "SHOP_DATABASE_URL": pg.url(password="lag-pw")}
        lake = work / "lake"
        subprocess.run([str(bin_), "extract", str(spec), "--lake", str(lake)], env=env, check=True,
                       capture_output=True)
        next_id = 10_000
        for rate in [int(r) for r in args.rates.split(",")]:
            p = subprocess.Popen([str(bin_), "extract", str(spec), "--lake", str(lake), "--follow", "--json",
                                  "--batch-interval", args.batch_interval],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
            commits = []

            def read():
                for line in p.stdout:
                    commits.append((time.time(), json.loads(line)))
            reader = threading.Thread(target=read, daemon=True)
            reader.start()
            time.sleep(1.0)
            done = []
            t0 = time.time()
            writer(pg, rate, args.seconds, next_id, done)
            wrote = time.time() - t0
            next_id += 10_000_000
            time.sleep(2.0)
            p.terminate()
            p.wait(30)
            reader.join(5)
            lags = [t - c["first_commit_us"] / 1e6 for t, c in commits if c.get("first_commit_us")]
            newest = [t - c["last_commit_us"] / 1e6 for t, c in commits if c.get("last_commit_us")]
            changes = sum(c["rows"] for _, c in commits)
            rows.append((rate, done[0], wrote, changes, len(commits), lags, newest))
    finally:
        pg.stop()
        shutil.rmtree(work, ignore_errors=True)
    load = os.getloadavg()
    print(f"\nCDC lag, PostgreSQL commit → bronze commit printed (--batch-interval {args.batch_interval}); "
          f"load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, {os.cpu_count()} cores")
    print(f"{'target/s':>9} {'made':>8} {'in bronze':>9} {'achieved/s':>10} {'commits':>7} "
          f"{'p50 s':>6} {'p99 s':>6} {'max s':>6} {'p50 newest':>10}")
    for rate, made, wrote, changes, commits, lags, newest in rows:
        print(f"{rate:>9} {made:>8} {changes:>9} {made / wrote:>10.0f} {commits:>7} "
              f"{pct(lags, 50):>6.3f} {pct(lags, 99):>6.3f} {max(lags, default=float('nan')):>6.3f} "
              f"{statistics.median(newest) if newest else float('nan'):>10.3f}")


if __name__ == "__main__":
    main()
