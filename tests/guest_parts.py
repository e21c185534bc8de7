"""Sandboxed queries in parts: the guest splits a query's scans across instances.

Usage: python3 tests/guest_parts.py MEDALLION_BIN

TPC-H lineitem at SF 0.1 (DuckDB's tpch extension), written by DuckDB as one Parquet file in
row groups of 20,000 rows (~20 MB: above DataFusion's 10 MiB floor for splitting a file by
byte ranges). Each query runs in the guest with `--instances 1`, `2` and `3`:

  rows       every answer equals DuckDB's over the same file, row for row (decimals exact;
             averages, a double in DuckDB and a decimal of scale 6 here, to 1e-6):
             aggregates, DISTINCT, a top-k, a window, a self-join, a query with nothing to
             split
  parts      `--stats` says the query ran in that many parts (a table that changed between
             the parts' plans, or a plan that differs between instances, makes it run whole;
             so does a point lookup, which reads its filter column first and little else)
  reads      in N = 2 or 3 parts the file is read once, not once per part: each part reads
             only its own row groups. Beyond the first footer read (512 KiB, once per
             instance: N parts and the finishing one), the parts read at most 1.25x the data
             one instance reads, + 64 KiB per part. A top-k reads more in parts (each part's
             heap tightens only its own scan's dynamic filter; natively the partitions share
             one): it must read less than N times what one instance reads
  errors     a query that fails in every part fails once, in the error's own words, with no
             partial answer
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "bench"))
from remote_parquet import duck_connect  # noqa: E402 - DuckDB with its extensions from the venv

FAILURES: list[str] = []

QUERIES = [
    # TPC-H Q1 without the order of its avg columns' last digits in question.
    """SELECT l_returnflag, l_linestatus, sum(l_quantity) AS sum_qty,
              sum(l_extendedprice) AS sum_base_price,
              sum(l_extendedprice * (1 - l_discount)) AS sum_disc_price,
              avg(l_quantity) AS avg_qty, avg(l_discount) AS avg_disc, count(*) AS count_order
       FROM lineitem WHERE l_shipdate <= DATE '1998-09-02'
       GROUP BY l_returnflag, l_linestatus ORDER BY l_returnflag, l_linestatus""",
    "SELECT count(*) AS n, min(l_shipdate) AS lo, max(l_comment) AS hi FROM lineitem",
    "SELECT count(DISTINCT l_orderkey) AS orders FROM lineitem WHERE l_discount > 0.05",
    """SELECT l_orderkey, l_linenumber, l_extendedprice FROM lineitem WHERE l_quantity >= 50
       ORDER BY l_extendedprice DESC, l_orderkey, l_linenumber LIMIT 10""",
    """SELECT l_suppkey, sum(l_quantity) AS q FROM lineitem GROUP BY l_suppkey
       HAVING sum(l_quantity) > 3900 ORDER BY q DESC, l_suppkey""",
    """SELECT l_orderkey, l_linenumber,
              row_number() OVER (PARTITION BY l_orderkey ORDER BY l_extendedprice DESC, l_linenumber) AS r
       FROM lineitem WHERE l_orderkey < 200 ORDER BY l_orderkey, l_linenumber""",
    """SELECT a.l_shipmode, count(*) AS n FROM lineitem a
       JOIN (SELECT l_orderkey FROM lineitem GROUP BY l_orderkey HAVING count(*) = 7) b
         ON a.l_orderkey = b.l_orderkey
       GROUP BY a.l_shipmode ORDER BY a.l_shipmode""",
    # A point lookup reads its filter column first, little of the file: it runs whole.
    "SELECT l_orderkey, l_linenumber, l_comment FROM lineitem WHERE l_orderkey = 4242 ORDER BY l_linenumber",
    "SELECT 42 AS answer",
]


def check(ok, what, detail=""):
    print(("ok    " if ok else "FAIL  ") + what + (f": {detail}" if detail and not ok else ""))
    if not ok:
        FAILURES.append(what)


FOOTER_READ = 512 << 10


def canon(v):
    """One spelling per value: exact decimals without trailing zeros; floats as they are."""
    if isinstance(v, (bool, float)) or v is None:
        return v
        d = Decimal(v)
        return int(d) if d == d.to_integral_value() else d.normalize()
    return str(v)


def medallion(bin_, sql, table, instances):
    p = subprocess.run([bin_, "query", sql, "--table", f"lineitem={table}", "--format", "json",
                        "--stats", "--instances", str(instances)],
                       capture_output=True, text=True, timeout=600)
    return p


def medallion_rows(stdout):
    rows = json.loads(stdout or "[]", parse_float=Decimal)
    # Floats (avg of decimals is a decimal, of integers a float) compare rounded either way.
    return [tuple(canon(float(v) if isinstance(v, Decimal) and "avg" in k else v)
                  for k, v in r.items()) for r in rows]


def duck_rows(con, sql, table):
    cur = con.execute(sql.replace("FROM lineitem", f"FROM '{table}'"))
    names = [d[0] for d in cur.description]
    return [tuple(canon(float(v) if isinstance(v, Decimal) and "avg" in n else v)
                  for n, v in zip(names, r)) for r in cur.fetchall()]


def same_rows(got, want):
    if len(got) != len(want):
        return False
    for g, w in zip(got, want):
        if len(g) != len(w):
            return False
        for a, b in zip(g, w):
            if isinstance(a, float) or isinstance(b, float):
                if not (isinstance(a, float) and isinstance(b, float)) or abs(a - b) > 1e-6 * max(1, abs(b)):
                    return False
            elif a != b:
                return False
    return True


def stats(stderr):
    for line in reversed(stderr.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    return {}


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    bin_ = sys.argv[1]
    with tempfile.TemporaryDirectory() as tmp:
        table = Path(tmp) / "lineitem.parquet"
        con = duck_connect("tpch")
        con.execute("CALL dbgen(sf = 0.1)")
        con.execute(f"COPY lineitem TO '{table}' (FORMAT parquet, ROW_GROUP_SIZE 20000)")
        con.execute("DROP TABLE lineitem")
        print(f"lineitem SF 0.1: {table.stat().st_size / 1e6:.1f} MB")

        for sql in QUERIES:
            want = duck_rows(con, sql, table)
            short = " ".join(sql.split())[:70]
            one = 0
            for instances in (1, 2, 3):
                p = medallion(bin_, sql, table, instances)
                if p.returncode != 0:
                    check(False, f"{short} --instances {instances}", p.stderr[-800:])
                    continue
                got = medallion_rows(p.stdout)
                check(same_rows(got, want), f"{short} --instances {instances}: {len(got)} rows as DuckDB",
                      f"first difference: {next(((g, w) for g, w in zip(got, want) if g != w), (len(got), len(want)))}")
                st = stats(p.stderr)
                read = st.get("bytes", 0)
                # Every query here but the constant one and the point lookup has a scan to split.
                parts = instances if "FROM lineitem" in sql and "l_orderkey = 4242" not in sql else 1
                check(st.get("parts") == parts, f"{short} --instances {instances}: ran in {parts} part(s)",
                      f"--stats says {st.get('parts')}")
                if instances == 1:
                    one = read
                elif "FROM lineitem" in sql:
                    data, one_data = read - (instances + 1) * FOOTER_READ, one - FOOTER_READ
                    bound = (instances * one if "LIMIT" in sql
                             else 1.25 * one_data + instances * (64 << 10) + (instances + 1) * FOOTER_READ)
                    check(0 < read < bound,
                          f"{short} --instances {instances}: {read / 1e6:.2f} MB read, "
                          f"one instance {one / 1e6:.2f} MB (data {data / 1e6:.2f} vs {one_data / 1e6:.2f} MB)",
                          "the parts read more than their share")

        bad = "SELECT CAST(l_comment AS INT) AS c FROM lineitem"
        for instances in (1, 2):
            p = medallion(bin_, bad, table, instances)
            once = p.stderr.count("Cannot cast string") == 1
            check(p.returncode != 0 and once and p.stdout.strip() == "",
                  f"a failing query fails once, in its own words (--instances {instances})",
                  f"exit {p.returncode}, stderr {p.stderr[-500:]!r}, stdout {p.stdout[:200]!r}")
    if FAILURES:
        print(f"\n{len(FAILURES)} check(s) failed: {FAILURES}")
        sys.exit(1)
    print("\nall guest-parts checks passed")


if __name__ == "__main__":
    main()
