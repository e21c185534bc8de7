"""PostgreSQL as a bronze source: `medallion extract` in snapshot and incremental modes against a
real PostgreSQL that this script starts (tests/pg_cluster.py: Debian's postgresql, initdb in a
temp folder, wal_level=logical, a free loopback port, scram-sha-256 over TCP), stopped and deleted
at the end, also on failure.

Usage: python3 tests/postgres_source.py MEDALLION_BIN [--keep DIR]

  snapshot     a shop schema (orders: int8 key, numeric(12,2), timestamptz, timestamp, date,
               uuid, jsonb, json, text[], bytea, bool, float8, int2, varchar, NULLs in every
               column) of 25,000 rows (three portal fetches); `extract` with mode = "snapshot": bronze, read by deltalake,
               equals the table as psycopg reads it, row for row and type for type; a second
               snapshot after changes equals the changed table (replaced, not appended).
  incremental  mode = "incremental" on updated_at: the first run takes every row and records the
               greatest updated_at in the commit; after updates and inserts the next run appends
               exactly the changed rows and records the new greatest value; a run with no change
               commits nothing; `medallion run` extracts, then builds a silver table on it.
  errors       a wrong password fails saying the login was refused, without printing the
               password; a missing table is named; an unreachable port is named as host:port;
               an unconstrained numeric column is named with a cast suggested.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from decimal import Decimal
from pathlib import Path

import deltalake
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pg_cluster import PgCluster  # noqa: E402
from s3_lake import Report  # noqa: E402

PASSWORD = "pg-S3cret-do-not-print"
ROWS = 25_000  # more than one portal fetch (10,000 rows)

SCHEMA = """
CREATE SCHEMA shop;
CREATE TABLE shop.orders (
    order_id   int8 PRIMARY KEY,
    qty        int2,
    status     varchar(20),
    total      numeric(12,2),
    weight     float8,
    paid       bool,
    placed_at  timestamptz,
    local_ts   timestamp,
    ship_date  date,
    ref        uuid,
    doc        jsonb,
    raw_json   json,
    tags       text[],
    blob       bytea,
    updated_at timestamptz NOT NULL
);
CREATE TABLE shop.loose (id int4, amount numeric);
"""

INSERT = """
INSERT INTO shop.orders
SELECT g,
       CASE WHEN g % 11 = 0 THEN NULL ELSE (g % 7)::int2 END,
       CASE WHEN g % 13 = 0 THEN NULL ELSE (ARRAY['new','paid','shipped'])[1 + g % 3] END,
       CASE WHEN g % 17 = 0 THEN NULL ELSE round((g * 12.345) % 100000, 2) - 500 END,
       CASE WHEN g % 19 = 0 THEN NULL ELSE g / 7.0 END,
       CASE WHEN g % 23 = 0 THEN NULL ELSE g % 2 = 0 END,
       CASE WHEN g % 29 = 0 THEN NULL ELSE timestamptz '2024-01-01 00:00:00+02' + g * interval '37 minutes 1.123456 seconds' END,
       CASE WHEN g % 31 = 0 THEN NULL ELSE timestamp '1999-12-31 23:59:59' + g * interval '1 day' END,
       CASE WHEN g % 37 = 0 THEN NULL ELSE date '1970-01-01' + g * 9 END,
       CASE WHEN g % 41 = 0 THEN NULL ELSE md5(g::text)::uuid END,
       CASE WHEN g % 43 = 0 THEN NULL ELSE jsonb_build_object('n', g, 'name', 'café ' || g, 'nested', jsonb_build_array(1, 'two', null)) END,
       CASE WHEN g % 47 = 0 THEN NULL ELSE json_build_object('k', g) END,
       CASE WHEN g % 53 = 0 THEN NULL WHEN g % 5 = 0 THEN ARRAY[]::text[]
            ELSE ARRAY['t' || g, NULL, 'ü'] END,
       CASE WHEN g % 59 = 0 THEN NULL ELSE decode(md5(g::text), 'hex') END,
       timestamptz '2024-06-01 00:00:00+00' + g * interval '1 second'
FROM generate_series(LO, HI) AS g
"""



def insert_sql(lo, hi, updated_at=None):
    sql = INSERT.replace("LO", str(lo)).replace("HI", str(hi))
    if updated_at:
        sql = sql.replace("timestamptz '2024-06-01 00:00:00+00' + g * interval '1 second'", updated_at)
    return sql


COLUMNS = ["order_id", "qty", "status", "total", "weight", "paid", "placed_at", "local_ts",
           "ship_date", "ref", "doc", "raw_json", "tags", "blob", "updated_at"]


def norm(col, v):
    """One comparable form per value, from psycopg or from deltalake/pyarrow."""
    if v is None:
        return None
    if col in ("doc", "raw_json"):
        return json.dumps(json.loads(v) if isinstance(v, str) else v, sort_keys=True)
    if col == "ref":
        return str(v)
    if col == "blob":
        return bytes(v)
    if col == "tags":
        return tuple(v)
    if col == "local_ts":
        # A timestamp without time zone is stored as UTC (Delta's `timestamp`).
        return v.replace(tzinfo=None)
    if col == "total":
        return Decimal(v)
    return v


def pg_rows(pg, table="shop.orders", where=""):
    with psycopg.connect(pg.dsn()) as c:
        cur = c.execute(f"SELECT {', '.join(COLUMNS)} FROM {table} {where} ORDER BY order_id")
        return [tuple(norm(k, v) for k, v in zip(COLUMNS, row)) for row in cur]


def bronze_rows(lake, name):
    t = deltalake.DeltaTable(str(lake / "bronze" / name)).to_pyarrow_table()
    rows = t.select(COLUMNS).to_pylist()
    return sorted((tuple(norm(k, r[k]) for k in COLUMNS) for r in rows), key=lambda r: r[0]), t


def first_difference(got, want):
    if len(got) != len(want):
        return f"{len(got)} rows, want {len(want)}"
    for g, w in zip(got, want):
        if g != w:
            diffs = [f"{k}: {a!r} != {b!r}" for k, a, b in zip(COLUMNS, g, w) if a != b]
            return f"order {w[0]}: " + "; ".join(diffs)
    return ""


def write_spec(path, body):
    path.write_text('[pipeline]\nname = "shop"\n\n[sources.shop]\nkind = "postgres"\n'
                    'url = "env:SHOP_DATABASE_URL"\n\n' + body)
    return path


def medallion(bin_, *args, env=None):
    return subprocess.run([str(bin_), *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=300, check=False)


def last_commit_info(lake, name):
    log = sorted((lake / "bronze" / name / "_delta_log").glob("*.json"))[-1]
    actions = [json.loads(line) for line in log.read_text().splitlines()]
    meta = [a["metaData"] for a in actions if "metaData" in a]
    txn = [a["txn"] for a in actions if "txn" in a]
    return log.stem, meta, txn


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("medallion")
    ap.add_argument("--keep", help="work in this folder and keep it")
    args = ap.parse_args()
    bin_ = Path(args.medallion).resolve()
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="medallion-pg-"))
    work.mkdir(parents=True, exist_ok=True)
    work.chmod(0o755)  # the `postgres` user must reach its folder inside
    rep = Report()
    pg = PgCluster(work / "pg", password=PASSWORD, settings={"wal_level": "logical"})
    try:
        pg.start()
        run_checks(rep, pg, bin_, work)
    finally:
        pg.stop()
        if not args.keep and not rep.failed:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\n{rep.count - len(rep.failed)}/{rep.count} checks passed"
          + (f"; work folder kept: {work}" if rep.failed else ""))
    sys.exit(1 if rep.failed else 0)


def run_checks(rep, pg, bin_, work):
    with psycopg.connect(pg.dsn(), autocommit=True) as c:
        c.execute(SCHEMA)
        c.execute(insert_sql(1, ROWS))
    env = {"SHOP_DATABASE_URL": pg.url()}
    lake = work / "lake"

    # ── snapshot ────────────────────────────────────────────────────────────────────────────
    spec = write_spec(work / "snapshot.toml", '[bronze.orders_snap]\nsource = "shop"\n'
                      'table = "shop.orders"\nmode = "snapshot"\n')
    r = medallion(bin_, "extract", spec, "--lake", lake, "--json", env=env)
    rep.check(r.returncode == 0, "snapshot: extract succeeds", r.stderr.strip()[-400:])
    if r.returncode != 0:
        return
    got, table = bronze_rows(lake, "orders_snap")
    want = pg_rows(pg)
    rep.check(got == want, "snapshot: bronze equals the table, row for row",
              first_difference(got, want) or f"{len(got)} rows, every column")
    types = {f.name: str(f.type) for f in table.schema}
    rep.check(types.get("total") == "decimal128(12, 2)" and types.get("tags") == "list<element: string>"
              and types.get("blob") == "binary" and types.get("placed_at", "").startswith("timestamp[us, tz=UTC]")
              and types.get("qty") == "int16" and types.get("ship_date") == "date32[day]",
              "snapshot: types map faithfully", json.dumps(types))
    nulls = {k: table.column(k).null_count for k in COLUMNS if k not in ("order_id", "updated_at")}
    rep.check(all(n > 0 for n in nulls.values()), "snapshot: NULLs in every nullable column survive",
              json.dumps(nulls))
    rep.check(PASSWORD not in r.stdout + r.stderr, "snapshot: the password is not printed")

    with psycopg.connect(pg.dsn(), autocommit=True) as c:
        c.execute("DELETE FROM shop.orders WHERE order_id % 100 = 0")
        c.execute("UPDATE shop.orders SET status = 'refunded' WHERE order_id % 250 = 1")
    r = medallion(bin_, "extract", spec, "--lake", lake, env=env)
    got, _ = bronze_rows(lake, "orders_snap")
    want = pg_rows(pg)
    rep.check(r.returncode == 0 and got == want,
              "snapshot: a second snapshot replaces the rows with the table's current ones",
              first_difference(got, want) or r.stderr.strip()[-300:])

    # ── incremental ─────────────────────────────────────────────────────────────────────────
    spec = write_spec(work / "incremental.toml",
                      '[bronze.orders_raw]\nsource = "shop"\ntable = "shop.orders"\n'
                      'mode = "incremental"\nwatermark = "updated_at"\n\n'
                      '[silver.orders]\nsql = "SELECT order_id, total, status, updated_at FROM orders_raw"\n'
                      'dedupe = { key = ["order_id"], order_by = "updated_at" }\n')
    r = medallion(bin_, "extract", spec, "--lake", lake, "--json", env=env)
    rep.check(r.returncode == 0, "incremental: first extract succeeds", r.stderr.strip()[-400:])
    got, _ = bronze_rows(lake, "orders_raw")
    want = pg_rows(pg)
    rep.check(got == want, "incremental: the first run takes every row",
              first_difference(got, want) or f"{len(got)} rows")
    with psycopg.connect(pg.dsn()) as c:
        (max1,) = c.execute("SELECT max(updated_at)::text FROM shop.orders").fetchone()
    version, meta, txn = last_commit_info(lake, "orders_raw")
    recorded = [json.loads(m["configuration"]["medallion.watermark"]) for m in meta
                if "medallion.watermark" in m.get("configuration", {})]
    rep.check(recorded == [{"column": "updated_at", "value": max1}] and txn,
              "incremental: the greatest updated_at is recorded in the same commit as the rows",
              f"version {version}: {recorded}, txn {txn}")

    with psycopg.connect(pg.dsn(), autocommit=True) as c:
        c.execute("UPDATE shop.orders SET status = 'shipped', total = total + 1, "
                  "updated_at = now() + interval '1 day' WHERE order_id % 97 = 3")
        c.execute(insert_sql(ROWS + 1, ROWS + 40, "now() + interval '2 days'"))
    changed = pg_rows(pg, where="WHERE updated_at > now()")
    r = medallion(bin_, "extract", spec, "--lake", lake, "--json", env=env)
    rep.check(r.returncode == 0, "incremental: second extract succeeds", r.stderr.strip()[-400:])
    t = deltalake.DeltaTable(str(lake / "bronze" / "orders_raw"))
    newest = t.to_pyarrow_table().to_pylist()
    latest_ingest = max(row["_ingested_at"] for row in newest)
    appended = sorted((tuple(norm(k, row[k]) for k in COLUMNS) for row in newest
                       if row["_ingested_at"] == latest_ingest), key=lambda x: x[0])
    rep.check(appended == changed, "incremental: only the updated and inserted rows are appended",
              first_difference(appended, changed) or f"{len(appended)} rows appended "
              f"({len(newest)} in bronze)")
    with psycopg.connect(pg.dsn()) as c:
        (max2,) = c.execute("SELECT max(updated_at)::text FROM shop.orders").fetchone()
    _, meta, _ = last_commit_info(lake, "orders_raw")
    recorded = [json.loads(m["configuration"]["medallion.watermark"])["value"] for m in meta]
    rep.check(recorded == [max2], "incremental: the new greatest updated_at is recorded",
              f"{recorded} vs {max2}")

    before = t.version()
    r = medallion(bin_, "extract", spec, "--lake", lake, "--json", env=env)
    after = deltalake.DeltaTable(str(lake / "bronze" / "orders_raw")).version()
    rep.check(r.returncode == 0 and before == after,
              "incremental: a run with no changed rows commits nothing",
              f"version {before} → {after}; {r.stderr.strip()[-200:]}")

    r = medallion(bin_, "run", spec, "--lake", lake, "--engine", "native", "--json", env=env)
    silver_ok = r.returncode == 0
    if silver_ok:
        silver = deltalake.DeltaTable(str(lake / "silver" / "orders")).to_pyarrow_table()
        with psycopg.connect(pg.dsn()) as c:
            (n,) = c.execute("SELECT count(*) FROM shop.orders").fetchone()
        rows_in_bronze = deltalake.DeltaTable(str(lake / "bronze" / "orders_raw")).to_pyarrow_table()
        # Deleted rows stay in an incremental bronze (no deletes without CDC): silver holds
        # every key ever extracted.
        keys = len(set(rows_in_bronze.column("order_id").to_pylist()))
        silver_ok = silver.num_rows == keys and keys >= n
    rep.check(silver_ok, "run: extracts, then builds silver on the bronze it wrote",
              r.stderr.strip()[-400:] if r.returncode else "")

    # A run whose silver fails after its extract committed must not say "no table was changed".
    spec_fail = write_spec(work / "fails.toml",
                           '[bronze.orders_fail]\nsource = "shop"\ntable = "shop.orders"\n\n'
                           '[silver.bad]\nsql = "SELECT order_id FROM orders_fail"\n'
                           'expect = [{ name = "never", condition = "order_id < 0", on_violation = "fail" }]\n')
    r = medallion(bin_, "run", spec_fail, "--lake", work / "lake-fail", "--engine", "native",
                  "--json", env=env)
    try:
        out = json.loads(r.stdout)
    except ValueError:
        out = {}
    committed = [c.get("table") for c in out.get("committed", [])]
    rep.check(r.returncode != 0 and out.get("changed_nothing") is False
              and "orders_fail" in committed
              and "only the extracted tables were committed" in out.get("error", ""),
              "run: a failure after the extract says the extract was committed, and nothing else",
              f"{out or r.stdout[-300:]} {r.stderr.strip()[-300:]}")

    # ── errors ──────────────────────────────────────────────────────────────────────────────
    bad = {"SHOP_DATABASE_URL": pg.url(password="wrong-" + PASSWORD)}
    r = medallion(bin_, "extract", spec, "--lake", work / "lake-bad", env=bad)
    out = r.stdout + r.stderr
    rep.check(r.returncode != 0 and "password" in out.lower() and PASSWORD not in out,
              "errors: a wrong password says so without printing it", out.strip()[-300:])

    spec_missing = write_spec(work / "missing.toml", '[bronze.nope]\nsource = "shop"\n'
                              'table = "shop.no_such_table"\n')
    r = medallion(bin_, "extract", spec_missing, "--lake", work / "lake-bad", env=env)
    rep.check(r.returncode != 0 and "shop.no_such_table" in r.stderr,
              "errors: a missing table is named", r.stderr.strip()[-300:])

    closed = {"SHOP_DATABASE_URL": f"postgres://postgres:{PASSWORD}@127.0.0.1:1/postgres"}
    r = medallion(bin_, "extract", spec_missing, "--lake", work / "lake-bad", env=closed)
    rep.check(r.returncode != 0 and "127.0.0.1:1" in r.stderr and PASSWORD not in r.stderr,
              "errors: an unreachable server is named as host:port", r.stderr.strip()[-300:])

    spec_loose = write_spec(work / "loose.toml", '[bronze.loose]\nsource = "shop"\n'
                            'table = "shop.loose"\n')
    r = medallion(bin_, "extract", spec_loose, "--lake", work / "lake-bad", env=env)
    rep.check(r.returncode != 0 and "`amount`" in r.stderr and "cast" in r.stderr,
              "errors: an unconstrained numeric column is named, with a cast suggested",
              r.stderr.strip()[-300:])
    spec_cast = write_spec(work / "cast.toml", '[bronze.loose]\nsource = "shop"\n'
                           'query = "SELECT id, amount::numeric(20,4) AS amount FROM shop.loose"\n')
    r = medallion(bin_, "extract", spec_cast, "--lake", work / "lake-cast", env=env)
    rep.check(r.returncode == 0, "errors: the same column cast in `query` extracts",
              r.stderr.strip()[-300:])


if __name__ == "__main__":
    main()
