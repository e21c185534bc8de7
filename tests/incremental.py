"""Incremental silver and gold: appended and merged tables equal a recomputation by DuckDB.

Usage: python3 tests/incremental.py MEDALLION_BIN

A spec with a row-by-row silver table (a join to a dimension, an expectation that drops rows),
a deduplicated silver table, and a gold aggregate. Files arrive run by run; after each run
every table, read by deltalake, equals DuckDB's answer over all the files so far, and the run
report says how each table took the new rows:
  clean      append (only the new files' rows are computed and appended; dropped rows are
             appended to its quarantine)
  latest     merge by key (only the files holding a key of the new rows are rewritten)
  by_region  merge by group key (count and sum of the new rows, added to the groups they touch)
  by_user    merge by group key, with min, max and a NULL key
  mean       full (avg cannot be merged from partial results; the report says so)
and a full rebuild where the input was compacted (`medallion optimize`), where two inputs moved,
and where the definition changed.
"""

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import deltalake
import duckdb

sys.path.insert(0, str(Path(__file__).resolve().parent))
from s3_lake import Report  # noqa: E402

SPEC = """[pipeline]
name = "inc"

[bronze.events]
path = "events/*.ndjson"

[bronze.users]
path = "users/*.csv"

[silver.clean]
sql = "SELECT e.id, e.user_id, e.amount, e.ts, u.region FROM events e LEFT JOIN users u ON e.user_id = u.user_id"
expect = [{ name = "positive", condition = "amount > 0", on_violation = "drop" }]

[silver.latest]
sql = "SELECT id, user_id, amount, ts FROM events"
dedupe = { key = ["id", "user_id"], order_by = "ts" }

[gold.by_region]
sql = "SELECT region, count(*) AS n, sum(amount) AS total FROM clean GROUP BY region"

[gold.by_user]
sql = '''SELECT CASE WHEN user_id = 0 THEN NULL ELSE user_id END AS u, region, count(*) AS n,
  sum(amount) AS total, min(ts) AS first_ts, max(amount) AS top
FROM clean GROUP BY CASE WHEN user_id = 0 THEN NULL ELSE user_id END, region ORDER BY u'''

[gold.mean]
sql = "SELECT region, avg(amount) AS mean FROM clean GROUP BY region"
"""

CLEAN = """SELECT e.id, e.user_id, e.amount, e.ts, u.region
FROM read_json_auto('{d}/events/*.ndjson') e LEFT JOIN read_csv_auto('{d}/users/*.csv') u ON e.user_id = u.user_id
WHERE e.amount > 0"""
LATEST = """SELECT id, user_id, amount, ts FROM (
  SELECT *, row_number() OVER (PARTITION BY id ORDER BY ts DESC) AS rn FROM read_json_auto('{d}/events/*.ndjson'))
WHERE rn = 1"""
BY_REGION = "SELECT region, count(*) AS n, sum(amount) AS total FROM ({clean}) GROUP BY region"
BY_USER = """SELECT CASE WHEN user_id = 0 THEN NULL ELSE user_id END AS u, region, count(*) AS n,
  sum(amount) AS total, min(ts) AS first_ts, max(amount) AS top
FROM ({clean}) GROUP BY ALL"""
MEAN = "SELECT region, avg(amount) AS mean FROM ({clean}) GROUP BY region"


def events_file(d, n, ids, ts0):
    lines = []
    for i, id_ in enumerate(ids):
        amount = (id_ * 7 + ts0) % 50 - 5  # some <= 0: dropped by the expectation
        lines.append(json.dumps({"id": id_, "user_id": id_ % 13, "amount": amount, "ts": ts0 + i}))
    (d / "events" / f"e{n:03}.ndjson").write_text("\n".join(lines) + "\n")


def users_file(d, n, users, region):
    rows = "\n".join(f"{u},{region}{u % 3}" for u in users)
    (d / "users" / f"u{n:03}.csv").write_text("user_id,region\n" + rows + "\n")


def rows(path, cols):
    t = deltalake.DeltaTable(str(path)).to_pyarrow_table()
    return sorted((tuple(r[c] for c in cols) for r in t.select(cols).to_pylist()), key=repr)


def duck(sql, d):
    return sorted((tuple(r) for r in duckdb.sql(sql.format(d=d)).fetchall()), key=repr)


def run(bin_, d, *extra):
    r = subprocess.run([str(bin_), "run", str(d / "spec.toml"), "--lake", str(d / "lake"), "--json", *extra],
                       capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise SystemExit(f"run failed:\n{r.stderr[-2000:]}")
    return {t["table"]: t for t in json.loads(r.stdout)["tables"]}


def main():
    bin_ = Path(sys.argv[1]).resolve()
    d = Path(tempfile.mkdtemp(prefix="medallion-inc-"))
    rep = Report()
    try:
        (d / "events").mkdir()
        (d / "users").mkdir()
        (d / "spec.toml").write_text(SPEC)
        users_file(d, 1, range(13), "r")
        events_file(d, 1, range(1, 201), 1000)

        def compare(label):
            clean = CLEAN.format(d=d)
            for table, sql, cols in (("silver/clean", CLEAN, ["id", "user_id", "amount", "ts", "region"]),
                                     ("silver/latest", LATEST, ["id", "user_id", "amount", "ts"]),
                                     ("gold/by_region", BY_REGION.replace("{clean}", clean), ["region", "n", "total"]),
                                     ("gold/by_user", BY_USER.replace("{clean}", clean),
                                      ["u", "region", "n", "total", "first_ts", "top"]),
                                     ("gold/mean", MEAN.replace("{clean}", clean), ["region", "mean"])):
                got, want = rows(d / "lake" / table, cols), duck(sql, d)
                rep.check(got == want, f"{label}: {table} equals DuckDB over all files",
                          f"{len(got)} rows" if got == want else f"{len(got)} vs {len(want)}: "
                          f"{sorted(set(got) ^ set(want))[:3]}")
            q = deltalake.DeltaTable(str(d / "lake" / "quarantine" / "clean")).to_pyarrow_table().num_rows
            want_q = duckdb.sql(f"SELECT count(*) FROM read_json_auto('{d}/events/*.ndjson') "
                                "WHERE amount <= 0").fetchone()[0]
            rep.check(q == want_q, f"{label}: clean's quarantine holds every dropped row once", f"{q} vs {want_q}")

        t = run(bin_, d)
        compare("run 1")
        rep.check(t["clean"]["refresh"].startswith("full: first build"), "run 1: a first build is full",
                  t["clean"]["refresh"])

        events_file(d, 2, list(range(150, 260)), 2000)  # 51 updates of ids from file 1, 59 new
        t = run(bin_, d)
        compare("run 2")
        rep.check(t["clean"]["refresh"].startswith("append: ") and "1 new file(s) of events" in t["clean"]["refresh"],
                  "run 2: the row-by-row table appends the new file's rows", t["clean"]["refresh"])
        rep.check(t["clean"]["rows_in"] == 110, "run 2: only the new file's rows were computed",
                  f"rows_in {t['clean']['rows_in']}")
        rep.check(t["latest"]["refresh"].startswith("merge: ") and "by key [id, user_id]" in t["latest"]["refresh"],
                  "run 2: the deduplicated table merges by key", t["latest"]["refresh"])
        rep.check(t["by_region"]["refresh"].startswith("merge: ") and "by group key [region]" in t["by_region"]["refresh"],
                  "run 2: the count/sum aggregate merges the new rows by group key", t["by_region"]["refresh"])
        rep.check(t["by_user"]["refresh"].startswith("merge: ") and "by group key [u, region]" in t["by_user"]["refresh"],
                  "run 2: the min/max aggregate with a NULL key merges by group key", t["by_user"]["refresh"])
        rep.check(t["mean"]["refresh"].startswith("full: ") and "avg(" in t["mean"]["refresh"],
                  "run 2: avg is rebuilt in full, saying why", t["mean"]["refresh"])

        events_file(d, 3, list(range(1000, 1050)), 3000)  # new keys only: no file touched
        t = run(bin_, d)
        compare("run 3")
        rep.check("0 of " in t["latest"]["refresh"], "run 3: new keys only rewrite no file",
                  t["latest"]["refresh"])
        log = d / "lake" / "silver" / "latest"
        live = len(deltalake.DeltaTable(str(log)).file_uris())
        rep.check(live == 2, "run 3: the merge added a file and kept the untouched one", f"{live} live files")

        r = subprocess.run([str(bin_), "optimize", "--lake", str(d / "lake")], capture_output=True, text=True)
        events_file(d, 4, list(range(10, 30)), 4000)
        t = run(bin_, d)
        compare("run 4 (after optimize)")
        rep.check(r.returncode == 0 and t["latest"]["refresh"].startswith("full: ")
                  and "compacted" in t["latest"]["refresh"],
                  "run 4: after the input was compacted, a full rebuild says so", t["latest"]["refresh"])

        users_file(d, 2, range(13, 20), "s")
        events_file(d, 5, list(range(2000, 2010)), 5000)
        t = run(bin_, d)
        compare("run 5")
        rep.check(t["clean"]["refresh"].startswith("full: 2 of its inputs changed"),
                  "run 5: two inputs moved: a full rebuild says so", t["clean"]["refresh"])

        (d / "spec.toml").write_text(SPEC.replace('on_violation = "drop"', 'on_violation = "drop" }, '
                                                  '{ name = "small", condition = "amount < 100", '
                                                  'on_violation = "warn"'))
        events_file(d, 6, list(range(3000, 3005)), 6000)
        t = run(bin_, d)
        compare("run 6")
        rep.check(t["clean"]["refresh"] == "full: its definition changed",
                  "run 6: a changed definition rebuilds in full", t["clean"]["refresh"])
    finally:
        if not rep.failed:
            shutil.rmtree(d, ignore_errors=True)
    print(f"\n{rep.count - len(rep.failed)}/{rep.count} checks passed" + (f"; kept {d}" if rep.failed else ""))
    sys.exit(1 if rep.failed else 0)


if __name__ == "__main__":
    main()
