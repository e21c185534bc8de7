"""Other Delta readers open every table Medallion writes and see the same rows.

Usage: python3 tests/delta_readers.py MEDALLION_BIN LAKE_DIR

For each Delta table under LAKE_DIR (bronze, silver, gold, quarantine) this reads the table
with the `deltalake` package (delta-rs) and with DuckDB's `delta_scan`, and with Medallion's
own `query --format json`, then compares row counts and an order-independent digest of
every row. Exits non-zero with the table and the difference on any mismatch.
"""

import glob
import hashlib
import json
import math
import os
import subprocess
import sys
from datetime import date, datetime, timezone
from decimal import Decimal

import deltalake
import duckdb


def load_duckdb_delta(con):
    """DuckDB cannot download extensions here: load the wheel's extension file by path."""
    import duckdb_extension_delta  # noqa: F401  (the wheel ships the binary next to its module)

    base = os.path.dirname(duckdb_extension_delta.__file__)
    found = glob.glob(os.path.join(base, "**", "*.duckdb_extension"), recursive=True)
    if not found:
        raise SystemExit(f"no delta.duckdb_extension inside {base}")
    con.execute(f"LOAD '{found[0]}'")


def norm(v):
    """One text form per value, whatever library produced it."""
    if v is None:
        return "∅"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        return f"{v:.9g}"
    if isinstance(v, Decimal):
        return f"{float(v):.9g}"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, datetime):
        if v.tzinfo is None:
            v = v.replace(tzinfo=timezone.utc)
        return v.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")
    if isinstance(v, date):
        return v.isoformat()
    if isinstance(v, str):
        # Medallion's JSON prints timestamps as text; bring them to the same form.
        for fmt in ("%Y-%m-%dT%H:%M:%S.%fZ", "%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%dT%H:%M:%S.%f", "%Y-%m-%dT%H:%M:%S"):
            try:
                return norm(datetime.strptime(v, fmt).replace(tzinfo=timezone.utc))
            except ValueError:
                pass
        return v
    return str(v)


def digest(columns, rows):
    """Row count and a digest of the sorted rows, columns in `columns` order."""
    lines = sorted("\x1f".join(norm(r[c]) for c in columns) for r in rows)
    return len(lines), hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16], lines


def main():
    medallion, lake = sys.argv[1], os.path.abspath(sys.argv[2])
    tables = sorted(os.path.dirname(p) for p in glob.glob(f"{lake}/*/*/_delta_log"))
    if not tables:
        raise SystemExit(f"no Delta tables under {lake}")
    con = duckdb.connect(config={"allow_unsigned_extensions": "true"})
    load_duckdb_delta(con)
    failures = 0
    for path in tables:
        layer, name = path.split("/")[-2:]
        dt = deltalake.DeltaTable(path)
        arrow = dt.to_pyarrow_table()
        columns = [f.name for f in arrow.schema]
        by_deltalake = digest(columns, arrow.to_pylist())

        # Through Arrow: DuckDB's own Python conversion of time zones would need pytz.
        duck_rows = con.execute(f"SELECT * FROM delta_scan('{path}')").fetch_arrow_table().to_pylist()
        by_duckdb = digest(columns, duck_rows)

        qname = f"{name}_quarantine" if layer == "quarantine" else name
        out = subprocess.run(
            [medallion, "query", f'SELECT * FROM "{qname}"', "--table", f"{qname}=delta:{path}", "--format", "json"],
            check=True, capture_output=True, text=True,
        ).stdout
        by_medallion = digest(columns, [{c: r.get(c) for c in columns} for r in json.loads(out or "[]")])

        same = by_deltalake[:2] == by_duckdb[:2] == by_medallion[:2]
        status = "ok " if same else "DIFF"
        print(f"{status} {layer}/{name}: v{dt.version()} rows deltalake={by_deltalake[0]} duckdb={by_duckdb[0]} medallion={by_medallion[0]}")
        if not same:
            failures += 1
            for label, d in (("duckdb", by_duckdb), ("medallion", by_medallion)):
                extra = sorted(set(d[2]) ^ set(by_deltalake[2]))[:3]
                if extra:
                    print(f"     {label} vs deltalake, first differing rows: {extra}")
    if failures:
        raise SystemExit(f"{failures} of {len(tables)} tables differ between readers")
    print(f"all {len(tables)} tables read identically by deltalake, duckdb and medallion")


if __name__ == "__main__":
    main()
