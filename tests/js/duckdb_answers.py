"""TPC-H lineitem at SF 0.1 as one Parquet file, and DuckDB's answers to queries over it.

Usage: python3 tests/js/duckdb_answers.py OUT.parquet < queries.json > answers.json

The file is written by DuckDB in row groups of 20,000 rows (~20 MB, above DataFusion's 10 MiB
floor for splitting a file), once: an existing OUT is kept. Each query names the table
`lineitem`. Answers are rows of JSON values as the npm package's `toArray()` gives them:
decimals as numbers, dates as ISO strings.
"""

import datetime
import json
import sys
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from remote_parquet import duck_connect  # noqa: E402 - DuckDB with its extensions from the venv


def value(v):
    if isinstance(v, Decimal):
        return float(v)
    if isinstance(v, (datetime.date, datetime.datetime)):
        return v.isoformat()
    return v


def main():
    out = Path(sys.argv[1])
    queries = json.load(sys.stdin)
    con = duck_connect("tpch")
    if not out.exists():
        con.execute("CALL dbgen(sf = 0.1)")
        tmp = out.with_suffix(".tmp")
        con.execute(f"COPY lineitem TO '{tmp}' (FORMAT parquet, ROW_GROUP_SIZE 20000)")
        con.execute("DROP TABLE lineitem")
        tmp.rename(out)
    answers = []
    for sql in queries:
        cur = con.execute(sql.replace("FROM lineitem", f"FROM '{out}'"))
        names = [d[0] for d in cur.description]
        answers.append([{n: value(v) for n, v in zip(names, row)} for row in cur.fetchall()])
    json.dump(answers, sys.stdout)


if __name__ == "__main__":
    main()
