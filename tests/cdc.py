"""Change data capture from PostgreSQL: `mode = "cdc"` bronze tables and `apply_changes` silver
tables, against a real PostgreSQL 15 this script starts (tests/pg_cluster.py: wal_level=logical,
scram-sha-256 over TCP, a free loopback port), stopped and deleted at the end.

Usage: python3 tests/cdc.py MEDALLION_BIN [--keep DIR] [--kills N]

  snapshot     the first run creates the publication and the slot and takes a snapshot in the
               slot's exported snapshot: bronze holds the rows (_op = 'r'); the table records the
               slot's consistent point, which is the slot's confirmed position; silver (scd 1)
               equals the table as psycopg reads it.
  changes      inserts, updates, deletes, an update of a primary key, one transaction over two
               tables, a 30,000-row transaction: bronze gets exactly the changes made (counted
               by kind), silver scd 1 equals the tables row for row, the scd 2 history of the
               inventory matches the history this script made; an extract with no change commits
               nothing.
  reference    apply_changes over change events in shuffled order with redelivered duplicates
               (files, so the order is ours): scd 1 and scd 2 equal a Python reference.
  exactly once `extract --follow` SIGKILLed at random points while a writer commits transactions
               (N kills, default 12), restarted each time; then bronze holds every change exactly
               once (no (lsn, key, op) twice, counts equal the writer's) and silver equals the
               table: nothing was acknowledged to the slot before it was committed.
  watch        `run --watch` over a cdc table: a stock change committed in PostgreSQL becomes
               one alert line (a second change that keeps it low, none); silver equals the table.
  faults       the server restarts under `extract --follow`: it resumes by itself, nothing lost;
               a missing publication and a dropped slot are errors naming them; a truncate is an
               error naming the table; a wrong password is refused without being printed.
"""

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from decimal import Decimal
from pathlib import Path

import deltalake
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pg_cluster import PgCluster  # noqa: E402
from s3_lake import Report  # noqa: E402

PASSWORD = "cdc-S3cret-do-not-print"

SCHEMA = """
CREATE SCHEMA shop;
CREATE TABLE shop.orders (
    order_id   int8 PRIMARY KEY,
    customer   text NOT NULL,
    status     varchar(20),
    total      numeric(12,2),
    tags       text[],
    doc        jsonb,
    ref        uuid,
    placed_at  timestamptz
);
CREATE TABLE shop.inventory (
    product_id int8,
    warehouse  text,
    qty        int4,
    PRIMARY KEY (product_id, warehouse)
);
INSERT INTO shop.orders
SELECT g, 'c' || (g % 97), 'new', (g * 1.25)::numeric(12,2), ARRAY['t' || (g % 3)],
       jsonb_build_object('n', g), md5(g::text)::uuid, timestamptz '2024-01-01' + g * interval '1 minute'
FROM generate_series(1, 1000) g;
INSERT INTO shop.inventory SELECT p, w, 100 FROM generate_series(1, 50) p, unnest(ARRAY['north', 'south']) w;
"""

ORDER_COLS = ["order_id", "customer", "status", "total", "tags", "doc", "ref", "placed_at"]
INV_COLS = ["product_id", "warehouse", "qty"]

SPEC = """[pipeline]
name = "shop"

[sources.shop]
kind = "postgres"
url = "env:SHOP_DATABASE_URL"

[bronze.orders_cdc]
source = "shop"
table = "shop.orders"
mode = "cdc"
create_slot = true

[bronze.inventory_cdc]
source = "shop"
table = "shop.inventory"
mode = "cdc"
create_slot = true

[silver.orders]
sql = "SELECT * FROM orders_cdc"
apply_changes = { keys = ["order_id"], sequence_by = "_lsn", delete_when = "_op = 'D'", except_columns = ["_op", "_lsn", "_commit_ts", "_ingested_at"] }

[silver.inventory]
sql = "SELECT * FROM inventory_cdc"
apply_changes = { keys = ["product_id", "warehouse"], sequence_by = "_lsn", delete_when = "_op = 'D'", except_columns = ["_op", "_commit_ts", "_ingested_at"] }

[silver.inventory_history]
sql = "SELECT * FROM inventory_cdc"
apply_changes = { keys = ["product_id", "warehouse"], sequence_by = "_lsn", delete_when = "_op = 'D'", scd = 2, except_columns = ["_op", "_commit_ts", "_ingested_at"] }
"""


def norm(col, v):
    if v is None:
        return None
    if col == "doc":
        return json.dumps(json.loads(v) if isinstance(v, str) else v, sort_keys=True)
    if col == "ref":
        return str(v)
    if col == "tags":
        return tuple(v)
    if col == "total":
        return Decimal(v)
    return v


def pg_table(pg, table, cols):
    with psycopg.connect(pg.dsn()) as c:
        cur = c.execute(f"SELECT {', '.join(cols)} FROM {table} ORDER BY {cols[0]}, {cols[1]}")
        return [tuple(norm(k, v) for k, v in zip(cols, row)) for row in cur]


def delta_rows(path, cols):
    t = deltalake.DeltaTable(str(path)).to_pyarrow_table()
    rows = [tuple(norm(k, r[k]) for k in cols) for r in t.select(cols).to_pylist()]
    return sorted(rows, key=lambda r: (r[0], r[1])), t


def first_difference(got, want):
    if len(got) != len(want):
        extra = sorted(set(got) - set(want))[:3]
        missing = sorted(set(want) - set(got))[:3]
        return f"{len(got)} rows, want {len(want)}; extra {extra}; missing {missing}"
    for g, w in zip(got, want):
        if g != w:
            return f"got {g}, want {w}"
    return ""


def medallion(bin_, *args, env=None, timeout=300):
    return subprocess.run([str(bin_), *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=timeout, check=False)


def recorded_lsn(lake, table, slot):
    """The greatest `txn` version for the slot in the table's log (its committed position)."""
    best = None
    for log in (lake / "bronze" / table / "_delta_log").glob("*.json"):
        for line in log.read_text().splitlines():
            a = json.loads(line)
            if "txn" in a and a["txn"]["appId"] == f"medallion-cdc/{slot}":
                best = max(best or 0, a["txn"]["version"])
    return best


def lsn_int(text):
    hi, lo = text.split("/")
    return (int(hi, 16) << 32) | int(lo, 16)


def slot_position(pg, slot):
    with psycopg.connect(pg.dsn()) as c:
        row = c.execute("SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = %s",
                        (slot,)).fetchone()
        return lsn_int(row[0]) if row else None


def op_counts(lake, table):
    t = deltalake.DeltaTable(str(lake / "bronze" / table)).to_pyarrow_table()
    counts = {}
    for op in t.column("_op").to_pylist():
        counts[op] = counts.get(op, 0) + 1
    return counts, t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("medallion")
    ap.add_argument("--keep", help="work in this folder and keep it")
    ap.add_argument("--kills", type=int, default=12)
    args = ap.parse_args()
    bin_ = Path(args.medallion).resolve()
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="medallion-cdc-"))
    work.mkdir(parents=True, exist_ok=True)
    work.chmod(0o755)
    rep = Report()
    pg = PgCluster(work / "pg", password=PASSWORD,
                   settings={"wal_level": "logical", "max_replication_slots": "20",
                             "max_wal_senders": "20"})
    try:
        pg.start()
        run_checks(rep, pg, bin_, work, args.kills)
    finally:
        pg.stop()
        if not args.keep and not rep.failed:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\n{rep.count - len(rep.failed)}/{rep.count} checks passed"
          + (f"; work folder kept: {work}" if rep.failed else ""))
    sys.exit(1 if rep.failed else 0)


def run_checks(rep, pg, bin_, work, kills):
    with psycopg.connect(pg.dsn(), autocommit=True) as c:
        c.execute(SCHEMA)
    env = {"SHOP_DATABASE_URL": pg.url()}
    lake = work / "lake"
    spec = work / "cdc.toml"
    spec.write_text(SPEC)

    # ── snapshot ────────────────────────────────────────────────────────────────────────────
    r = medallion(bin_, "run", spec, "--lake", lake, env=env)
    if not rep.check(r.returncode == 0, "snapshot: the first run creates slots, snapshots and builds silver",
                     r.stderr.strip()[-600:]):
        return
    counts, _ = op_counts(lake, "orders_cdc")
    rep.check(counts == {"r": 1000}, "snapshot: bronze holds the table's rows as _op = 'r'", str(counts))
    for table, slot in (("orders_cdc", "medallion_orders_cdc"), ("inventory_cdc", "medallion_inventory_cdc")):
        rec, pos = recorded_lsn(lake, table, slot), slot_position(pg, slot)
        rep.check(rec is not None and rec == pos,
                  f"snapshot: {table} records the slot's consistent point, the slot's confirmed position",
                  f"recorded {rec}, slot {pos}")
    got, _ = delta_rows(lake / "silver" / "orders", ORDER_COLS)
    want = pg_table(pg, "shop.orders", ORDER_COLS)
    rep.check(got == want, "snapshot: silver orders (scd 1) equals the table", first_difference(got, want))

    # ── changes ─────────────────────────────────────────────────────────────────────────────
    history = {}  # (product, warehouse) -> [qty, ...] in order; None = deleted
    with psycopg.connect(pg.dsn(), autocommit=True) as c:
        c.execute("INSERT INTO shop.orders SELECT g, 'new' || g, 'new', 9.99, NULL, NULL, NULL, now() "
                  "FROM generate_series(1001, 1100) g")                                  # 100 I
        c.execute("UPDATE shop.orders SET status = 'paid' WHERE order_id <= 200")         # 200 U
        c.execute("UPDATE shop.orders SET status = 'shipped', total = total + 1 WHERE order_id <= 50")  # 50 U
        c.execute("DELETE FROM shop.orders WHERE order_id BETWEEN 901 AND 950")           # 50 D
        c.execute("UPDATE shop.orders SET order_id = 5000 WHERE order_id = 999")          # 1 D + 1 U
        with c.transaction():                                                              # two tables
            c.execute("INSERT INTO shop.orders VALUES (1101, 'x', 'new', 5.00, NULL, NULL, NULL, now())")
            c.execute("UPDATE shop.inventory SET qty = qty - 1 WHERE product_id = 1 AND warehouse = 'north'")
        with c.transaction():                                                              # large
            c.execute("INSERT INTO shop.orders SELECT g, 'bulk', 'new', 1.00, NULL, NULL, NULL, now() "
                      "FROM generate_series(100001, 120000) g")                            # 20,000 I
            c.execute("UPDATE shop.orders SET status = 'bulk2' WHERE order_id BETWEEN 100001 AND 110000")  # 10,000 U
        for qty in (90, 80, 70):
            c.execute("UPDATE shop.inventory SET qty = %s WHERE product_id = 2 AND warehouse = 'south'", (qty,))
        c.execute("DELETE FROM shop.inventory WHERE product_id = 3 AND warehouse = 'north'")
        c.execute("INSERT INTO shop.inventory VALUES (3, 'north', 5)")
    history[(1, "north")] = [100, 99]
    history[(2, "south")] = [100, 90, 80, 70]
    history[(3, "north")] = [100, None, 5]
    want_counts = {"r": 1000, "I": 100 + 1 + 20000, "U": 200 + 50 + 1 + 10000, "D": 50 + 1}

    r = medallion(bin_, "run", spec, "--lake", lake, "--json", env=env)
    if not rep.check(r.returncode == 0, "changes: a run extracts the changes and applies them",
                     r.stderr.strip()[-600:]):
        return
    counts, bronze = op_counts(lake, "orders_cdc")
    rep.check(counts == want_counts, "changes: bronze holds exactly the changes made, by kind",
              f"{counts} (want {want_counts})")
    rep.check(bronze.schema.field("_lsn").type == pa.int64()
              and str(bronze.schema.field("_commit_ts").type).startswith("timestamp[us, tz=UTC]"),
              "changes: _lsn is int64, _commit_ts a UTC timestamp",
              f"{bronze.schema.field('_lsn').type}, {bronze.schema.field('_commit_ts').type}")
    got, _ = delta_rows(lake / "silver" / "orders", ORDER_COLS)
    want = pg_table(pg, "shop.orders", ORDER_COLS)
    rep.check(got == want, "changes: silver orders (scd 1) equals the table, deletes and the key change included",
              first_difference(got, want) or f"{len(got)} rows")
    got, _ = delta_rows(lake / "silver" / "inventory", INV_COLS)
    want = pg_table(pg, "shop.inventory", INV_COLS)
    rep.check(got == want, "changes: silver inventory (scd 1, two-column key) equals the table",
              first_difference(got, want) or f"{len(got)} rows")
    hist = deltalake.DeltaTable(str(lake / "silver" / "inventory_history")).to_pyarrow_table().to_pylist()
    ok, detail = True, []
    for key, qtys in history.items():
        versions = sorted((v for v in hist if (v["product_id"], v["warehouse"]) == key),
                          key=lambda v: v["__start_at"])
        want_live = [q for q in qtys if q is not None]
        got_q = [v["qty"] for v in versions]
        chained = all(a["__end_at"] == b["__start_at"] for a, b in zip(versions, versions[1:]))
        # A delete closes the version before it: the version before a delete ends, with no
        # version starting where it ends.
        closed = qtys[-1] is not None and versions and versions[-1]["__end_at"] is None
        if qtys.count(None):
            i = qtys.index(None) - 1  # the version deleted
            chained = versions[i]["__end_at"] is not None and versions[i]["__end_at"] < versions[i + 1]["__start_at"]
        if got_q != want_live or not chained or not closed:
            ok = False
            detail.append(f"{key}: {got_q} want {want_live} chained={chained} current={closed}")
    rep.check(ok, "changes: scd 2 history has each version, chained, deletes closing theirs",
              "; ".join(detail) or f"{len(history)} keys")

    before = deltalake.DeltaTable(str(lake / "bronze" / "orders_cdc")).version()
    r = medallion(bin_, "extract", spec, "--lake", lake, env=env)
    after = deltalake.DeltaTable(str(lake / "bronze" / "orders_cdc")).version()
    rep.check(r.returncode == 0 and before == after, "changes: an extract with nothing new commits nothing",
              f"version {before} → {after}; {r.stderr.strip()[-200:]}")

    reference_checks(rep, bin_, work)
    exactly_once(rep, pg, bin_, work, lake, spec, env, kills)
    watched(rep, pg, bin_, work, env)
    faults(rep, pg, bin_, work, lake, spec, env)


def reference_checks(rep, bin_, work):
    """apply_changes over shuffled events with duplicates vs a Python reference."""
    rng = random.Random(7)
    events, seq = [], 0
    for key in range(1, 301):
        for _ in range(rng.randint(1, 6)):
            seq += rng.randint(1, 5)
            op = rng.choice(["I", "U", "U", "D"])
            events.append({"id": key, "val": rng.randint(0, 999) if op != "D" else None, "op": op, "seq": seq})
    events += rng.sample(events, 200)  # redelivered
    rng.shuffle(events)
    src = work / "events"
    src.mkdir()
    pq.write_table(pa.Table.from_pylist(events, schema=pa.schema(
        [("id", pa.int64()), ("val", pa.int64()), ("op", pa.string()), ("seq", pa.int64())])),
        src / "events.parquet")
    spec = work / "ref.toml"
    spec.write_text(f"""[pipeline]
name = "ref"
[bronze.events]
path = "{src}/*.parquet"
[silver.current]
sql = "SELECT id, val, op, seq FROM events"
apply_changes = {{ keys = ["id"], sequence_by = "seq", delete_when = "op = 'D'", except_columns = ["op"] }}
[silver.history]
sql = "SELECT id, val, op, seq FROM events"
apply_changes = {{ keys = ["id"], sequence_by = "seq", delete_when = "op = 'D'", scd = 2, except_columns = ["op", "seq"] }}
""")
    lake = work / "lake-ref"
    r = medallion(bin_, "run", spec, "--lake", lake)
    if not rep.check(r.returncode == 0, "reference: apply_changes over shuffled, redelivered events runs",
                     r.stderr.strip()[-400:]):
        return
    by_key = {}
    for e in {(e["id"], e["seq"]): e for e in events}.values():
        by_key.setdefault(e["id"], []).append(e)
    want_cur, want_hist = [], []
    for key, evs in by_key.items():
        evs.sort(key=lambda e: e["seq"])
        if evs[-1]["op"] != "D":
            want_cur.append((key, evs[-1]["val"], evs[-1]["seq"]))
        for a, b in zip(evs, evs[1:] + [None]):
            if a["op"] != "D":
                want_hist.append((key, a["val"], a["seq"], b["seq"] if b else None))
    cur = deltalake.DeltaTable(str(lake / "silver" / "current")).to_pyarrow_table().to_pylist()
    got = sorted((r["id"], r["val"], r["seq"]) for r in cur)
    rep.check(got == sorted(want_cur), "reference: scd 1 equals the latest non-deleted event per key",
              f"{len(got)} keys" if got == sorted(want_cur) else first_difference(got, sorted(want_cur)))
    hist = deltalake.DeltaTable(str(lake / "silver" / "history")).to_pyarrow_table().to_pylist()
    by_start = lambda t: (t[0], t[2])  # noqa: E731 — key, __start_at
    got = sorted(((r["id"], r["val"], r["__start_at"], r["__end_at"]) for r in hist), key=by_start)
    want_hist.sort(key=by_start)
    rep.check(got == want_hist, "reference: scd 2 equals every non-deleted version with its start and end",
              f"{len(got)} versions" if got == want_hist else first_difference(got, want_hist))


class Writer(threading.Thread):
    """Commits small transactions until stopped, counting the changes it made."""

    def __init__(self, pg, first_id):
        super().__init__(daemon=True)
        self.pg, self.next_id, self.stop_flag = pg, first_id, threading.Event()
        self.inserts = self.updates = self.deletes = 0
        self.error = None

    def run(self):
        try:
            with psycopg.connect(self.pg.dsn(), autocommit=True) as c:
                rng = random.Random(11)
                while not self.stop_flag.is_set():
                    with c.transaction():
                        c.execute("INSERT INTO shop.orders VALUES (%s, 'w', 'new', 2.50, NULL, NULL, NULL, now())",
                                  (self.next_id,))
                        c.execute("UPDATE shop.orders SET status = 'w' || %s WHERE order_id = %s",
                                  (self.next_id, rng.randint(1, 800)))
                        if self.next_id % 10 == 0:
                            c.execute("DELETE FROM shop.orders WHERE order_id = %s", (self.next_id - 5,))
                            self.deletes += 1
                    self.inserts += 1
                    self.updates += 1
                    self.next_id += 1
                    time.sleep(0.002)
        except Exception as e:  # noqa: BLE001 — reported by the test
            self.error = e


def exactly_once(rep, pg, bin_, work, lake, spec, env, kills):
    counts0, _ = op_counts(lake, "orders_cdc")
    writer = Writer(pg, 200_001)
    writer.start()
    rng = random.Random(3)
    killed, commits_seen = 0, 0
    for _ in range(kills):
        p = subprocess.Popen([str(bin_), "extract", str(spec), "--lake", str(lake), "--table", "orders_cdc",
                              "--follow", "--batch-interval", "50ms", "--json"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env={**os.environ, **env})
        time.sleep(rng.uniform(0.3, 2.0))
        p.send_signal(signal.SIGKILL)
        out, err = p.communicate()
        killed += 1
        commits_seen += len(out.splitlines())
        if "error" in err.lower():
            rep.check(False, "exactly once: a followed extract runs until killed", err.strip()[-400:])
            break
    writer.stop_flag.set()
    writer.join()
    rep.check(writer.error is None, "exactly once: the writer ran", str(writer.error))
    r = medallion(bin_, "extract", spec, "--lake", lake, "--table", "orders_cdc", env=env)
    rep.check(r.returncode == 0, "exactly once: a last extract catches up", r.stderr.strip()[-300:])
    counts, bronze = op_counts(lake, "orders_cdc")
    made = {"I": writer.inserts, "U": writer.updates, "D": writer.deletes}
    new = {k: counts.get(k, 0) - counts0.get(k, 0) for k in ("I", "U", "D")}
    rep.check(new == made, f"exactly once: after {killed} SIGKILLs bronze has each change once, by kind",
              f"bronze {new}, writer made {made}; {commits_seen} commits printed before the kills")
    keys = list(zip(bronze.column("_lsn").to_pylist(), bronze.column("order_id").to_pylist(),
                    bronze.column("_op").to_pylist()))
    changes = [k for k in keys if k[2] != "r"]
    rep.check(len(changes) == len(set(changes)), "exactly once: no (lsn, key, op) is in bronze twice",
              f"{len(changes)} changes")
    r = medallion(bin_, "run", spec, "--lake", lake, env=env)
    got, _ = delta_rows(lake / "silver" / "orders", ORDER_COLS)
    want = pg_table(pg, "shop.orders", ORDER_COLS)
    rep.check(r.returncode == 0 and got == want, "exactly once: silver equals the table after the kills",
              first_difference(got, want) or f"{len(got)} rows")
    rec, pos = recorded_lsn(lake, "orders_cdc", "medallion_orders_cdc"), slot_position(pg, "medallion_orders_cdc")
    rep.check(rec is not None and pos is not None and pos >= rec,
              "exactly once: the slot's position reached what bronze recorded", f"recorded {rec}, slot {pos}")


WATCH_SPEC = """[pipeline]
name = "stock"

[sources.shop]
kind = "postgres"
url = "env:SHOP_DATABASE_URL"

[bronze.stock_cdc]
source = "shop"
table = "shop.inventory"
mode = "cdc"
create_slot = true

[silver.stock]
sql = "SELECT product_id, warehouse, qty, _op, _lsn FROM stock_cdc"
apply_changes = { keys = ["product_id", "warehouse"], sequence_by = "_lsn", delete_when = "_op = 'D'", except_columns = ["_op", "_lsn"] }

[gold.low_stock]
sql = "SELECT product_id, warehouse, qty FROM stock WHERE qty < 10"
alert = { key = ["product_id", "warehouse"] }
"""


def watched(rep, pg, bin_, work, env):
    """`run --watch` with a cdc source: a stock change in PostgreSQL becomes one alert."""
    spec = work / "watch.toml"
    spec.write_text(WATCH_SPEC)
    lake, alerts = work / "lake-watch", work / "alerts.ndjson"
    p = subprocess.Popen([str(bin_), "run", str(spec), "--lake", str(lake), "--watch", "--trigger-interval",
                          "200ms", "--alerts", str(alerts), "--json"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **env})

    def alert_lines():
        return [json.loads(line) for line in alerts.read_text().splitlines()] if alerts.exists() else []

    def wait_for(cond, seconds):
        deadline = time.time() + seconds
        while time.time() < deadline:
            if cond():
                return True
            time.sleep(0.02)
        return False

    try:
        started = wait_for(lambda: (lake / "gold" / "low_stock" / "_delta_log").exists(), 60)
        rep.check(started, "watch: run --watch with a cdc source builds gold")
        before = len(alert_lines())
        with psycopg.connect(pg.dsn(), autocommit=True) as c:
            c.execute("UPDATE shop.inventory SET qty = 3 WHERE product_id = 5 AND warehouse = 'north'")
            committed = time.time()
        got = wait_for(lambda: any(a["key"] == {"product_id": 5, "warehouse": "north"}
                                   for a in alert_lines()[before:]), 10)
        latency = time.time() - committed
        rep.check(got, "watch: a stock change below the threshold in PostgreSQL becomes an alert",
                  f"{latency * 1000:.0f} ms from the PostgreSQL commit to the alert line")
        with psycopg.connect(pg.dsn(), autocommit=True) as c:
            c.execute("UPDATE shop.inventory SET qty = 2 WHERE product_id = 5 AND warehouse = 'north'")
        time.sleep(2.0)
        mine = [a for a in alert_lines()[before:] if a["key"] == {"product_id": 5, "warehouse": "north"}]
        rep.check(len(mine) == 1, "watch: a second change that keeps it low raises no second alert",
                  f"{len(mine)} alert(s) for the key")
    finally:
        p.send_signal(signal.SIGTERM)
        try:
            p.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.communicate()
    got, _ = delta_rows(lake / "silver" / "stock", INV_COLS)
    want = pg_table(pg, "shop.inventory", INV_COLS)
    rep.check(got == want, "watch: silver equals the table when the watcher stops", first_difference(got, want))


def faults(rep, pg, bin_, work, lake, spec, env):
    # The server restarts under a followed extract.
    counts0, _ = op_counts(lake, "orders_cdc")
    p = subprocess.Popen([str(bin_), "extract", str(spec), "--lake", str(lake), "--table", "orders_cdc",
                          "--follow", "--batch-interval", "50ms"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **env})
    with psycopg.connect(pg.dsn(), autocommit=True) as c:
        c.execute("INSERT INTO shop.orders SELECT g, 'r1', 'new', 1, NULL, NULL, NULL, now() "
                  "FROM generate_series(300001, 300100) g")
    time.sleep(1.0)
    pg.restart()
    with psycopg.connect(pg.dsn(), autocommit=True) as c:
        c.execute("INSERT INTO shop.orders SELECT g, 'r2', 'new', 1, NULL, NULL, NULL, now() "
                  "FROM generate_series(300101, 300200) g")
    deadline = time.time() + 30
    while time.time() < deadline:
        counts, _ = op_counts(lake, "orders_cdc")
        if counts.get("I", 0) - counts0.get("I", 0) >= 200:
            break
        time.sleep(0.3)
    p.send_signal(signal.SIGTERM)
    try:
        out, err = p.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
    counts, _ = op_counts(lake, "orders_cdc")
    got = counts.get("I", 0) - counts0.get("I", 0)
    rep.check(got == 200 and "resuming from" in err and p.returncode == 0,
              "faults: after a server restart a followed extract resumes by itself; SIGTERM ends it cleanly",
              f"{got} of 200 inserts; exit {p.returncode}; {err.strip()[-300:]}")

    # A missing publication, without create_slot.
    bad = work / "nopub.toml"
    bad.write_text(SPEC.split("[bronze.orders_cdc]")[0] + '[bronze.other]\nsource = "shop"\n'
                   'table = "shop.orders"\nmode = "cdc"\npublication = "nope"\nslot = "other_slot"\n')
    r = medallion(bin_, "extract", bad, "--lake", work / "lake-bad", env=env)
    rep.check(r.returncode != 0 and "`nope`" in r.stderr and "CREATE PUBLICATION" in r.stderr,
              "faults: a missing publication is an error naming it and how to create it", r.stderr.strip()[-300:])
    # A dropped slot.
    with psycopg.connect(pg.dsn(), autocommit=True) as c:
        c.execute("SELECT pg_drop_replication_slot('medallion_inventory_cdc')")
    r = medallion(bin_, "extract", spec, "--lake", lake, "--table", "inventory_cdc", env=env)
    rep.check(r.returncode != 0 and "`medallion_inventory_cdc`" in r.stderr and "lost" in r.stderr,
              "faults: a dropped slot is an error naming it, saying the changes since are lost",
              r.stderr.strip()[-300:])
    # A truncate.
    with psycopg.connect(pg.dsn(), autocommit=True) as c:
        c.execute("TRUNCATE shop.orders")
    r = medallion(bin_, "extract", spec, "--lake", lake, "--table", "orders_cdc", env=env)
    rep.check(r.returncode != 0 and "shop.orders" in r.stderr and "truncate" in r.stderr,
              "faults: a truncate is an error naming the table", r.stderr.strip()[-300:])
    # A wrong password.
    wrong = {"SHOP_DATABASE_URL": pg.url(password="wrong-Pa55word")}
    r = medallion(bin_, "extract", spec, "--lake", lake, env=wrong)
    rep.check(r.returncode != 0 and "refused" in r.stderr and "wrong-Pa55word" not in r.stderr + r.stdout
              and PASSWORD not in r.stderr + r.stdout,
              "faults: a wrong password is refused, and not printed", r.stderr.strip()[-200:])


if __name__ == "__main__":
    main()
