"""Tables Medallion writes stay readable, identically, by readers Medallion did not write, for
the whole life of a table: incremental runs, checkpoints, OPTIMIZE, VACUUM, time travel.

Usage: python3 tests/delta_lifecycle.py MEDALLION_BIN [--runs 12] [--keep DIR]

The script writes a pipeline spec and deterministic sources (NDJSON and CSV, fixed seeds) into
a temporary folder. Its columns cover every type Medallion writes — bigint (with values past
2^53 and both ends of the range), int, double (-0.0, subnormal, ±1e308), decimal(18,4) and
decimal(38,10) at full width, strings (non-ASCII, longer than the 32 characters statistics
keep), boolean, date, timestamp (UTC, microseconds, before 1970) — and NULL in each. Silver
deduplicates and quarantines; one gold table is partitioned by `region`, whose values hold
spaces, `/`, `=`, `%`, `+`, non-ASCII, '' and NULL; another by a boolean and a date. The
pipeline checkpoints every 3 commits.

It runs the pipeline once per new source file, then, at stages of the table's life, reads
every table (bronze, silver, gold, quarantine) with
  reference      this script's own log replay + pyarrow reading each live Parquet file
  deltalake      DeltaTable(path).to_pyarrow_table()           (delta-rs, pyarrow datasets)
  deltalake-sql  deltalake.QueryBuilder                         (delta-rs, DataFusion)
  duckdb         delta_scan(path)                               (delta-kernel-rs)
  medallion      medallion query "SELECT * FROM t" --format json
and checks:
  - every reader sees the same rows (count, exact sums, order-independent digest of all rows),
    and, after the first and last runs, every table holds what the sources say it should (a
    model computed here from the generated rows, independently of Medallion: bad lines
    quarantined once, silver's expectation drops each violating row once, dedupe keeps the
    latest row per id, a partition value '' is stored as NULL as Hive and Spark do);
  - the log: live files exist, statistics bound each file's true values (numRecords,
    nullCount exact), partition values match the folders, a checkpoint-only copy of the log
    (commits before the checkpoint deleted) reads the same;
  - filters at, just below and just above per-file minima/maxima of every column, IS NULL,
    and awkward partition values give every reader exactly the rows a full scan filtered here
    gives (so file skipping on Medallion's statistics never drops a file with a match), and
    deltalake's file pruning keeps every file holding a matching row;
  - time travel: medallion PATH@V = DeltaTable(path, version=V) = delta_scan(version := V),
    for every version, before VACUUM;
  - `medallion optimize` (one OPTIMIZE commit, dataChange=false, same rows), `medallion
    vacuum` (dry run lists exactly the unreferenced files; refuses retention 0 without
    --force; --apply deletes exactly those), then one more run on the compacted table;
  - `medallion inspect TABLE --json`: one entry per commit, operations and row counts as the
    log says.

Values are compared after these normalisations (and no others):
  - every reader's value is read as the column's Delta type (from the table's schemaString),
    so each reader's own Arrow type choices (string/large_string/string_view, dictionary
    partition columns) do not matter; each reader's types are checked separately;
  - Medallion's JSON: a missing key is NULL (arrow-json omits nulls); numbers are parsed as
    Decimal, never through float, so 64-bit integers and decimals keep every digit;
    timestamps are RFC 3339 text and are parsed to UTC microseconds;
  - timestamps: any time zone → UTC, printed to the microsecond; a reader's time zone choice
    is not a difference, a different instant is;
  - decimals: exact values at the column's scale (1.5 and 1.5000 are one value at scale 4, but
    a value that does not fit the scale is kept as is and differs);
  - doubles: bit-exact via repr (so -0.0 ≠ 0.0 in digests); sums are exact (fractions).
A difference that is a known bug of another reader (today one: deltalake's pyarrow datasets
drop files whose statistics have no min/max for a column) is printed as KNOWN, matched narrowly
(every missing row lies in such a file), and does not fail the run. Exit status is non-zero
if any check fails; the work folder is then kept for inspection.
"""

import argparse
import glob
import hashlib
import json
import math
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal, getcontext
from fractions import Fraction
from urllib.parse import unquote

import deltalake
import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

getcontext().prec = 120  # exact sums of decimal(38,10) values
UTC = timezone.utc
CHECKPOINT_INTERVAL = 3
TIME_TRAVEL_VERSION = 3

# ── the pipeline ─────────────────────────────────────────────────────────────────────────────

# (column, spec type) of both sources, in order.
COLUMNS = [
    ("rid", "bigint"), ("id", "bigint"), ("big", "bigint"), ("n", "int"), ("x", "double"),
    ("d18", "decimal(18,4)"), ("d38", "decimal(38,10)"), ("s", "string"), ("flag", "boolean"),
    ("day", "date"), ("ts", "timestamp"), ("region", "string"), ("updated_at", "timestamp"),
]
SPEC_TYPE = dict(COLUMNS)
DELTA_TYPE = {"bigint": "long", "int": "integer", "double": "double", "string": "string",
              "boolean": "boolean", "date": "date", "timestamp": "timestamp"}

SPEC = """\
[pipeline]
name = "lifecycle"
description = "Every type Medallion writes, through many runs, checkpoints, optimize and vacuum"
checkpoint_interval = {interval}

[bronze.events_raw]
path = "data/events/*.ndjson"
schema = {{ {schema} }}

[bronze.extra_raw]
path = "data/extra/*.csv"
csv = {{ header = true, delimiter = "," }}
schema = {{ {schema} }}

[silver.events]
sql = \"\"\"
SELECT {cols} FROM events_raw
UNION ALL
SELECT {cols} FROM extra_raw
\"\"\"
dedupe = {{ key = ["id"], order_by = "updated_at" }}
expect = [
  {{ name = "non_negative_n", condition = "n IS NULL OR n >= 0", on_violation = "drop" }},
]

[gold.events_by_region]
sql = "SELECT * FROM events"
partition_by = ["region"]

[gold.daily_totals]
sql = \"\"\"
SELECT "flag", "day", count(*) AS row_count, count("big") AS bigs,
       sum("d18") AS d18_sum, sum("d38") AS d38_sum, sum(CAST("n" AS BIGINT)) AS n_sum,
       min("ts") AS first_ts, max("ts") AS last_ts, max("s") AS s_max
FROM events
GROUP BY "flag", "day"
\"\"\"
partition_by = ["flag", "day"]
"""

REGIONS = ["North", "South America", "a/b", "x=y", "100%", "São Paulo", "東京", "a+b", "a%2Fb",
           "sp  ace", " lead", "trail ", "O'Hara", "q?x#y", "c:\\dir", "emoji 🦀", None, ""]
EDGES = {
    "big": [9007199254740993, 9007199254740992, -9007199254740993, 2**63 - 1, -(2**63), 0],
    "n": [0, 2147483647, -1, -2147483648],
    "x": [0.1, -0.0, 0.0, 1e308, -1e308, 5e-324, 1 / 3],
    "d18": ["99999999999999.9999", "-99999999999999.9999", "0.0001", "-0.0001", "0.0000",
            "12345678901234.5678"],
    "d38": ["999999999999999999999999.9999999999", "-999999999999999999999999.9999999999",
            "123456789012345678901234.5678901234", "0.0000000001", "-0.0000000001"],
    "s": ["São Paulo", "東京", "🦀 crab", "O'Brien", "back\\slash", "tab\there", "a" * 40 + "b",
          "a" * 40 + "c", "ä" * 33, "ä" * 32, "zzz", "Zürich", "", "line\nbreak"],
    "day": ["1900-01-01", "1969-12-31", "1970-01-01", "2024-02-29", "2262-04-11"],
    "ts": ["1969-12-31T23:59:59.999999Z", "1970-01-01T00:00:00Z", "1900-01-01T00:00:00.000001Z",
           "2024-02-29T12:00:00.000001Z", "2024-02-29T12:00:00.999999Z",
           "2024-02-29T12:00:00.001Z", "2262-04-11T23:47:16.854775Z"],
}
WORDS = ["alpha", "Bravo", "charlie", "delta", "écho", "foxtrot", "golf", "hôtel", "India"]


def parse_ts(text):
    """RFC 3339 text (Z or ±hh:mm, any fraction up to nanoseconds) → an aware UTC datetime."""
    m = re.fullmatch(r"(\d{4})-(\d\d)-(\d\d)[T ](\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?"
                     r"(Z|[+-]\d\d(?::?\d\d)?)?", text)
    if not m:
        raise ValueError(f"not a timestamp: {text!r}")
    y, mo, d, h, mi, s, frac, tz = m.groups()
    frac = (frac or "").ljust(9, "0")
    if frac[6:] != "000":
        raise ValueError(f"timestamp finer than microseconds: {text!r}")
    dt = datetime(int(y), int(mo), int(d), int(h), int(mi), int(s), int(frac[:6]), tzinfo=UTC)
    if tz and tz != "Z":
        sign = -1 if tz[0] == "-" else 1
        hh, mm = int(tz[1:3]), int(tz[-2:]) if len(tz) > 3 else 0
        dt -= sign * timedelta(hours=hh, minutes=mm)
    return dt


def typed_edge(col, v):
    t = SPEC_TYPE[col]
    if t.startswith("decimal"):
        return Decimal(v)
    if t == "date":
        return date.fromisoformat(v)
    if t == "timestamp":
        return parse_ts(v)
    return v


def make_row(rng, rid, run, i, csv_safe):
    """One source row as typed Python values (None for NULL)."""
    def pick(col, random_value, p_null=0.06, p_edge=0.22):
        r = rng.random()
        if r < p_null:
            return None
        if r < p_null + p_edge:
            return typed_edge(col, rng.choice(EDGES[col]))
        return random_value()

    row = {
        "rid": rid,
        "id": rng.randint(1, 250),
        "big": pick("big", lambda: rng.randint(-10**18, 10**18)),
        "n": pick("n", lambda: rng.randint(0, 10**6)),
        "x": pick("x", lambda: round(rng.uniform(-1e6, 1e6), rng.randint(0, 6))),
        "d18": pick("d18", lambda: Decimal(rng.randint(-10**12, 10**12)).scaleb(-4)),
        "d38": pick("d38", lambda: Decimal(rng.randint(-10**30, 10**30)).scaleb(-10)),
        "s": pick("s", lambda: f"{rng.choice(WORDS)} {rng.randint(0, 999)}"),
        "flag": None if rng.random() < 0.06 else rng.random() < 0.5,
        "day": pick("day", lambda: date(2024, 1, 1) + timedelta(days=rng.randint(0, 20))),
        "ts": pick("ts", lambda: datetime(2024, 1, 1, tzinfo=UTC)
                   + timedelta(microseconds=rng.randint(0, 365 * 86400 * 10**6))),
        "region": rng.choice(REGIONS),
        # Unique per row, growing with the run: dedupe keeps the latest row of each id.
        "updated_at": datetime(2024, 6, 1, tzinfo=UTC) + timedelta(days=run, seconds=i,
                                                                     microseconds=rid % 997),
    }
    if csv_safe:  # CSV cannot tell '' from NULL, and Medallion's CSV lines are single lines
        if row["s"] is not None and (row["s"] == "" or "\n" in row["s"]):
            row["s"] = "empty"
        if row["region"] == "":
            row["region"] = "North"
    return row


def ts_text(v):
    return v.strftime("%Y-%m-%dT%H:%M:%S.%fZ" if v.microsecond else "%Y-%m-%dT%H:%M:%SZ")


def text_of(v):
    """A value as source text (JSON literal text for NDJSON numbers)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, Decimal):
        return format(v, "f")
    if isinstance(v, datetime):
        return ts_text(v)
    if isinstance(v, date):
        return v.isoformat()
    return str(v)


def ndjson_line(rng, row):
    parts = []
    for col, _ in COLUMNS:
        v = row[col]
        if v is None:
            if rng.random() < 0.5:
                continue  # a missing key is NULL too
            parts.append(f'"{col}": null')
        elif isinstance(v, str) or isinstance(v, (date, datetime)):
            parts.append(f'"{col}": {json.dumps(text_of(v), ensure_ascii=False)}')
        else:
            parts.append(f'"{col}": {text_of(v)}')
    return "{" + ", ".join(parts) + "}"


def csv_field(v):
    if v is None:
        return ""
    t = text_of(v)
    if any(c in t for c in ',"\n\r') or t != t.strip():
        return '"' + t.replace('"', '""') + '"'
    return t


class Sources:
    """The generated sources and what every table should hold (the expected model)."""

    def __init__(self, root):
        self.root = root
        self.rows = {"events_raw": [], "extra_raw": []}   # valid rows, typed, per bronze
        self.bad = {"events_raw": 0, "extra_raw": 0}       # lines that must be quarantined
        os.makedirs(f"{root}/data/events", exist_ok=True)
        os.makedirs(f"{root}/data/extra", exist_ok=True)
        schema = ", ".join(f'{c} = "{t}"' for c, t in COLUMNS)
        cols = ", ".join(f'"{c}"' for c, _ in COLUMNS)
        with open(f"{root}/pipeline.toml", "w", encoding="utf-8") as f:
            f.write(SPEC.format(interval=CHECKPOINT_INTERVAL, schema=schema, cols=cols))

    def add_run(self, run):
        """Writes this run's new source files (one NDJSON each run, a CSV every third from the
        first: a bronze glob that matches nothing fails the run)."""
        rng = random.Random(1000 + run)
        lines = []
        for i in range(40):
            row = make_row(rng, run * 10000 + i, run, i, csv_safe=False)
            self.rows["events_raw"].append(row)
            lines.append(ndjson_line(rng, row))
        if run % 2 == 0:  # a value that does not fit its declared type
            lines.insert(7, f'{{"rid": {run * 10000 + 900}, "id": 1, "big": "twelve"}}')
            self.bad["events_raw"] += 1
        if run % 4 == 1:  # a line that is not JSON
            lines.insert(3, f'{{"rid": {run * 10000 + 901}, "id":')
            self.bad["events_raw"] += 1
        with open(f"{self.root}/data/events/part-{run:03d}.ndjson", "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
        if run % 3 == 1:
            out = [",".join(c for c, _ in COLUMNS)]
            for i in range(15):
                row = make_row(rng, run * 10000 + 5000 + i, run, 5000 + i, csv_safe=True)
                self.rows["extra_raw"].append(row)
                out.append(",".join(csv_field(row[c]) for c, _ in COLUMNS))
            if run == 4:
                bad = make_row(rng, run * 10000 + 5900, run, 5900, csv_safe=True)
                bad["day"] = "notadate"
                out.insert(4, ",".join(csv_field(bad[c]) for c, _ in COLUMNS))
                self.bad["extra_raw"] += 1
            with open(f"{self.root}/data/extra/part-{run:03d}.csv", "w", encoding="utf-8") as f:
                f.write("\n".join(out) + "\n")

    @staticmethod
    def passes(r):
        return (r["n"] if r["n"] is not None else 0) >= 0

    def silver_quarantine(self):
        """Rows silver's expectation drops: each once, however many rebuilds saw it."""
        return [r for r in self.rows["events_raw"] + self.rows["extra_raw"] if not self.passes(r)]

    def silver(self):
        latest = {}
        for r in self.rows["events_raw"] + self.rows["extra_raw"]:
            if self.passes(r) and (r["id"] not in latest
                                   or r["updated_at"] > latest[r["id"]]["updated_at"]):
                latest[r["id"]] = r
        return list(latest.values())

    def gold_by_region(self):
        # A partition value '' is written as the NULL partition (as Hive, Spark and delta-rs do).
        return [dict(r, region=None if r["region"] == "" else r["region"]) for r in self.silver()]

    def daily_totals(self):
        groups = defaultdict(list)
        for r in self.silver():
            groups[(r["flag"], r["day"])].append(r)
        out = []
        for (flag, day), rs in groups.items():
            def agg(f, col):
                vs = [r[col] for r in rs if r[col] is not None]
                return f(vs) if vs else None
            out.append({
                "flag": flag, "day": day, "row_count": len(rs),
                "bigs": sum(1 for r in rs if r["big"] is not None),
                "d18_sum": agg(sum, "d18"), "d38_sum": agg(sum, "d38"), "n_sum": agg(sum, "n"),
                "first_ts": agg(min, "ts"), "last_ts": agg(max, "ts"), "s_max": agg(max, "s"),
            })
        return out

    def expected(self, table):
        """Rows a table must hold, or None if the model does not cover it; plus its columns."""
        spec_cols = [c for c, _ in COLUMNS]
        return {
            "bronze/events_raw": (self.rows["events_raw"], spec_cols),
            "bronze/extra_raw": (self.rows["extra_raw"], spec_cols),
            "silver/events": (self.silver(), spec_cols),
            "gold/events_by_region": (self.gold_by_region(), spec_cols),
            "gold/daily_totals": (self.daily_totals(), None),
            "quarantine/events": (self.silver_quarantine(), spec_cols),
        }.get(table)


# ── values, rows, digests ────────────────────────────────────────────────────────────────────

def arrow_type(delta_type):
    """The Arrow type a Delta primitive type is compared as."""
    m = re.fullmatch(r"decimal\((\d+),\s*(\d+)\)", delta_type)
    if m:
        return pa.decimal128(int(m[1]), int(m[2]))
    return {"long": pa.int64(), "integer": pa.int32(), "short": pa.int16(), "byte": pa.int8(),
            "double": pa.float64(), "float": pa.float32(), "string": pa.string(),
            "boolean": pa.bool_(), "date": pa.date32(), "timestamp": pa.timestamp("us", "UTC"),
            "binary": pa.binary()}[delta_type]


def canon(v, t):
    """One text per value of Delta type `t` (an Arrow type), whatever reader produced it."""
    if v is None:
        return None
    try:
        if pa.types.is_boolean(t):
            if isinstance(v, bool):
                return "true" if v else "false"
        elif pa.types.is_integer(t):
            if isinstance(v, Decimal) and v == v.to_integral_value():
                v = int(v)
            if isinstance(v, int) and not isinstance(v, bool):
                return str(v)
        elif pa.types.is_floating(t):
            if isinstance(v, (float, int, Decimal)) and not isinstance(v, bool):
                return repr(float(v))  # Decimal → float is correctly rounded: exact for
                # the shortest round-trip text Medallion prints
        elif pa.types.is_decimal(t):
            if isinstance(v, (Decimal, int)) and not isinstance(v, bool):
                d = Decimal(v)
                q = d.quantize(Decimal(1).scaleb(-t.scale))
                return format(q, "f") if q == d else f"{d}(not at scale {t.scale})"
            if isinstance(v, str):
                return canon(Decimal(v), t)
        elif pa.types.is_timestamp(t):
            if isinstance(v, str):
                v = parse_ts(v)
            if isinstance(v, datetime):
                if v.tzinfo is None:  # the type check reports naive types; the instant is UTC
                    v = v.replace(tzinfo=UTC)
                return v.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        elif pa.types.is_date(t):
            if isinstance(v, str):
                v = date.fromisoformat(v)
            if isinstance(v, date) and not isinstance(v, datetime):
                return v.isoformat()
        elif isinstance(v, str):
            return v
    except (ValueError, ArithmeticError) as e:
        return f"unreadable {v!r} ({e})"
    return f"unexpected {type(v).__name__} {v!r}"


@dataclass
class Scan:
    """One reader's rows of one table, canonicalised."""
    reader: str
    columns: list          # column names, sorted
    rows: list             # tuples of canonical texts, in `columns` order
    error: str = None

    def digest(self):
        lines = sorted(json.dumps(r, ensure_ascii=False) for r in self.rows)
        return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]

    def sums(self, types):
        """Exact sums of the numeric columns (float sums correctly rounded, order-free)."""
        out = {}
        for i, c in enumerate(self.columns):
            t = types.get(c)
            vals = [r[i] for r in self.rows if r[i] is not None]
            try:
                if pa.types.is_integer(t):
                    out[c] = sum(int(v) for v in vals)
                elif pa.types.is_decimal(t):
                    out[c] = sum((Decimal(v) for v in vals), Decimal(0))
                elif pa.types.is_floating(t):  # exact (fsum overflows on 1e308 + 1e308)
                    exact = sum((Fraction(float(v)) for v in vals), Fraction(0))
                    out[c] = f"{Decimal(exact.numerator) / Decimal(exact.denominator):.17g}"
            except (ValueError, ArithmeticError):
                out[c] = "unreadable"
        return out


def scan_of(reader, dicts, types, columns=None, error=None):
    if error is not None:
        return Scan(reader, [], [], error)
    columns = sorted(columns or types)
    return Scan(reader, columns, [tuple(canon(d.get(c), types[c]) for c in columns)
                                  for d in dicts])


def diff_scans(ref, other, keys, limit=3):
    """A short account of how `other` differs from `ref`, by key when keys are unique."""
    if other.error:
        return f"{other.reader}: error {other.error[:400]}"
    out = []
    if ref.columns != other.columns:
        out.append(f"columns differ: missing {sorted(set(ref.columns) - set(other.columns))}, "
                   f"extra {sorted(set(other.columns) - set(ref.columns))}")
        return "; ".join(out)
    out.append(f"rows {len(ref.rows)} vs {len(other.rows)}")
    ki = [ref.columns.index(k) for k in keys if k in ref.columns]
    by_key = lambda s: {tuple(r[i] for i in ki): r for r in s.rows}
    a, b = by_key(ref), by_key(other)
    if ki and len(a) == len(ref.rows) and len(b) == len(other.rows):
        missing = sorted(set(a) - set(b), key=str)[:limit]
        extra = sorted(set(b) - set(a), key=str)[:limit]
        if missing:
            out.append(f"missing keys {missing}")
        if extra:
            out.append(f"extra keys {extra}")
        shown = 0
        for k in sorted(set(a) & set(b), key=str):
            if a[k] != b[k] and shown < limit:
                cols = [f"{c}: {x!r} vs {y!r}" for c, x, y in zip(ref.columns, a[k], b[k]) if x != y]
                out.append(f"key {k}: " + ", ".join(cols))
                shown += 1
    else:
        ca, cb = Counter(ref.rows), Counter(other.rows)
        out.append(f"only in {ref.reader}: {list((ca - cb).elements())[:limit]}")
        out.append(f"only in {other.reader}: {list((cb - ca).elements())[:limit]}")
    return "; ".join(out)


# ── the Delta log, read here ─────────────────────────────────────────────────────────────────

COMMIT = re.compile(r"(\d{20})\.json")
CHECKPOINT = re.compile(r"(\d{20})\.checkpoint(?:\.\d{10}\.\d{10})?\.parquet")


def log_listing(table):
    log = os.path.join(table, "_delta_log")
    commits, checkpoints = {}, defaultdict(list)
    for name in os.listdir(log):
        if m := COMMIT.fullmatch(name):
            commits[int(m[1])] = os.path.join(log, name)
        elif m := CHECKPOINT.fullmatch(name):
            checkpoints[int(m[1])].append(os.path.join(log, name))
    return commits, checkpoints


def read_commit(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


@dataclass
class LogState:
    version: int
    files: dict           # add.path as written → the add action
    metadata: dict
    protocol: dict
    from_checkpoint: int  # the checkpoint version replay started from, or None


def replay(table, version=None, use_checkpoint=True):
    """The live files of `table` at `version` (latest if None), replayed from the log."""
    commits, checkpoints = log_listing(table)
    target = max(commits) if version is None else version
    start = None
    if use_checkpoint:
        usable = [v for v in checkpoints if v <= target]
        start = max(usable) if usable else None
    files, metadata, protocol = {}, None, None
    if start is not None:
        for part in sorted(checkpoints[start]):
            for row in pq.read_table(part).to_pylist():
                if row.get("add"):
                    add = dict(row["add"])
                    pv = add.get("partitionValues")
                    add["partitionValues"] = dict(pv) if isinstance(pv, list) else (pv or {})
                    files[add["path"]] = add
                if row.get("metaData"):
                    metadata = dict(row["metaData"])
                    cfg = metadata.get("configuration")
                    metadata["configuration"] = dict(cfg) if isinstance(cfg, list) else (cfg or {})
                    pc_ = metadata.get("partitionColumns")
                    metadata["partitionColumns"] = list(pc_ or [])
                if row.get("protocol"):
                    protocol = row["protocol"]
    for v in sorted(commits):
        if (start is not None and v <= start) or v > target:
            continue
        for action in read_commit(commits[v]):
            if "add" in action:
                files[action["add"]["path"]] = action["add"]
            elif "remove" in action:
                files.pop(action["remove"]["path"], None)
            elif "metaData" in action:
                metadata = action["metaData"]
            elif "protocol" in action:
                protocol = action["protocol"]
    return LogState(target, files, metadata, protocol, start)


def schema_types(metadata):
    """Column → Delta type name, from metaData.schemaString."""
    return {f["name"]: f["type"] for f in json.loads(metadata["schemaString"])["fields"]}


def parse_stat(v, t):
    """A statistics value (parsed with Decimal numbers) as a typed Python value."""
    if pa.types.is_timestamp(t):
        return parse_ts(v)
    if pa.types.is_date(t):
        return date.fromisoformat(v)
    if pa.types.is_floating(t):
        return float(v)
    if pa.types.is_integer(t):
        return int(v)
    if pa.types.is_decimal(t):
        return Decimal(v) if isinstance(v, (Decimal, int)) else Decimal(str(v))
    return v


def partition_value(text, t):
    """A partitionValues string as a typed value (None for null)."""
    if text is None:
        return None
    if pa.types.is_string(t):
        return text
    if text == "":
        return None
    if pa.types.is_boolean(t):
        return {"true": True, "false": False}[text.lower()]
    if pa.types.is_integer(t):
        return int(text)
    if pa.types.is_date(t):
        return date.fromisoformat(text)
    raise ValueError(f"partition value {text!r} of type {t}")


def file_on_disk(table, path):
    """The local file an `add.path` (a URI relative to the table, or absolute) names."""
    if path.startswith("file://"):
        return unquote(path[len("file://"):])
    return os.path.join(table, unquote(path))


def hive_unescape(s):
    """A Hive-escaped folder name's value (`%XX` escapes of UTF-8 bytes; `+` is itself)."""
    return unquote(s, errors="strict")


@dataclass
class FileData:
    path: str             # add.path as written
    local: str            # the file on disk
    rows: list            # typed row dicts, partition columns included
    stats: dict


class Reference:
    """A table read by this script: log replay, then pyarrow on each live file."""

    def __init__(self, table, version=None):
        self.table = table
        self.state = replay(table, version)
        self.delta_types = schema_types(self.state.metadata)
        self.types = {c: arrow_type(t) for c, t in self.delta_types.items()}
        self.partition_columns = list(self.state.metadata.get("partitionColumns") or [])
        self.files = []
        self.problems = []
        for path, add in sorted(self.state.files.items()):
            local = file_on_disk(table, path)
            if not os.path.exists(local):
                self.problems.append(f"live file missing on disk: {path}")
                continue
            data = pq.read_table(local)
            rows = data.to_pylist()
            pvals = {c: partition_value(add.get("partitionValues", {}).get(c), self.types[c])
                     for c in self.partition_columns}
            for c in self.partition_columns:
                if c in data.column_names:
                    self.problems.append(f"{path}: partition column {c} is also in the file")
            for r in rows:
                r.update(pvals)
            stats = json.loads(add["stats"], parse_float=Decimal) if add.get("stats") else {}
            self.files.append(FileData(path, local, rows, stats))

    def rows(self):
        return [r for f in self.files for r in f.rows]

    def scan(self):
        return scan_of("reference", self.rows(), self.types)


# ── the readers ──────────────────────────────────────────────────────────────────────────────

def load_duckdb_delta(con):
    """DuckDB cannot download extensions here: load the wheel's extension file by path."""
    import duckdb_extension_delta  # noqa: F401  (the wheel ships the binary next to its module)

    base = os.path.dirname(duckdb_extension_delta.__file__)
    found = glob.glob(os.path.join(base, "**", "*.duckdb_extension"), recursive=True)
    if not found:
        raise SystemExit(f"no delta.duckdb_extension inside {base}")
    con.execute(f"LOAD '{found[0]}'")


def new_duckdb():
    con = duckdb.connect(config={"allow_unsigned_extensions": "true"})
    load_duckdb_delta(con)
    con.execute("SET TimeZone = 'UTC'")
    return con


def sql_str(s):
    return "'" + s.replace("'", "''") + "'"


class Medallion:
    def __init__(self, binary):
        self.binary = binary
        self.calls = 0

    def __call__(self, *args, check=True):
        self.calls += 1
        p = subprocess.run([self.binary, *args], capture_output=True, text=True,
                           encoding="utf-8", env=dict(os.environ, RUST_BACKTRACE="0"))
        if check and p.returncode != 0:
            raise RuntimeError(f"medallion {' '.join(args[:3])}… exited {p.returncode}: "
                               f"{p.stderr.strip()[-1500:]}")
        return p

    def query(self, sql, location):
        out = self("query", sql, "--table", f"t={location}", "--format", "json",
                   "--engine", "native").stdout
        return json.loads(out or "[]", parse_float=Decimal)


def read_all(ctx, table, types, version=None):
    """Every reader's scan of `table` (at `version`), keyed by reader name."""
    scans = {}
    try:
        dt = deltalake.DeltaTable(table, version=version)
        scans["deltalake"] = scan_of("deltalake", dt.to_pyarrow_table().to_pylist(), types)
    except Exception as e:  # noqa: BLE001  (any reader failure is a finding to report)
        scans["deltalake"] = scan_of("deltalake", None, types, error=repr(e))
        dt = None
    try:
        if dt is None:
            raise RuntimeError("deltalake could not open the table")
        t = pa.table(deltalake.QueryBuilder().register("t", dt).execute('SELECT * FROM "t"').read_all())
        scans["deltalake-sql"] = scan_of("deltalake-sql", t.to_pylist(), types)
    except Exception as e:  # noqa: BLE001
        scans["deltalake-sql"] = scan_of("deltalake-sql", None, types, error=repr(e))
    try:
        vsql = "" if version is None else f", version := {version}"
        t = ctx.duck.execute(f"SELECT * FROM delta_scan({sql_str(table)}{vsql})").to_arrow_table()
        scans["duckdb"] = scan_of("duckdb", t.to_pylist(), types)
    except Exception as e:  # noqa: BLE001
        scans["duckdb"] = scan_of("duckdb", None, types, error=repr(e))
    try:
        loc = table if version is None else f"{table}@{version}"
        scans["medallion"] = scan_of("medallion", ctx.med.query('SELECT * FROM "t"', loc), types)
    except Exception as e:  # noqa: BLE001
        scans["medallion"] = scan_of("medallion", None, types, error=str(e))
    return scans


def reader_types(ctx, table):
    """Each reader's Arrow type of each column."""
    out = {}
    try:
        out["deltalake"] = {f.name: f.type for f in deltalake.DeltaTable(table).to_pyarrow_dataset().schema}
    except Exception as e:  # noqa: BLE001
        out["deltalake"] = repr(e)
    try:
        t = ctx.duck.execute(f"SELECT * FROM delta_scan({sql_str(table)}) LIMIT 0").to_arrow_table()
        out["duckdb"] = {f.name: f.type for f in t.schema}
    except Exception as e:  # noqa: BLE001
        out["duckdb"] = repr(e)
    try:
        out["medallion"] = {r["column_name"]: r["data_type"]
                            for r in ctx.med.query('DESCRIBE "t"', table)}
    except Exception as e:  # noqa: BLE001
        out["medallion"] = str(e)
    return out


def arrow_type_ok(got, want):
    """Whether a reader's Arrow type `got` carries the Delta type `want` (an Arrow type)."""
    if pa.types.is_dictionary(got):
        got = got.value_type
    if pa.types.is_string(want):
        return pa.types.is_string(got) or pa.types.is_large_string(got) or pa.types.is_string_view(got)
    if pa.types.is_timestamp(want):
        return pa.types.is_timestamp(got) and got.unit == "us" and got.tz in ("UTC", "+00:00", "Etc/UTC")
    return got == want


MEDALLION_TYPE = {  # DataFusion's type names (DESCRIBE) of each Delta type
    "long": r"Int64", "integer": r"Int32", "double": r"Float64", "string": r"Utf8(View)?|LargeUtf8",
    "boolean": r"Boolean", "date": r"Date32",
    "timestamp": r'Timestamp\((Microsecond|µs), (Some\()?"(UTC|\+00:00)"\)?\)',
}


def medallion_type_ok(got, delta_type):
    m = re.fullmatch(r"decimal\((\d+),(\d+)\)", delta_type)
    if m:
        return re.fullmatch(rf"Decimal128\({m[1]}, ?{m[2]}\)", got) is not None
    return re.fullmatch(MEDALLION_TYPE[delta_type], got) is not None


# ── checks and the report ────────────────────────────────────────────────────────────────────

class Report:
    def __init__(self):
        self.failed = []
        self.known_bugs = []
        self.count = 0
        self.matrix = {}  # (what, table, reader, stage) → "ok" | "FAIL"

    def check(self, ok, what, detail=""):
        self.count += 1
        print(f"{'ok  ' if ok else 'FAIL'} {what}" + (f"\n       {detail}" if detail and not ok else ""),
              flush=True)
        if not ok:
            self.failed.append(what)
        return ok

    def cell(self, what, table, reader, stage, ok):
        key = (what, table, reader, stage)
        self.matrix[key] = "FAIL" if (not ok or self.matrix.get(key) == "FAIL") else "ok"

    def info(self, what):
        print(f"     {what}", flush=True)

    def known(self, what, detail):
        """A difference explained by a known bug of a reader, not of Medallion: printed and
        listed at the end, not counted as a failure."""
        print(f"KNOWN {what}\n       {detail}", flush=True)
        self.known_bugs.append(what)

    def print_matrix(self, what, stages, readers):
        tables = sorted({k[1] for k in self.matrix if k[0] == what})
        if not tables:
            return
        print(f"\n{what}: table × reader × stage")
        width = max(len(t) for t in tables) + 2
        print(" " * width + f"{'reader':<15}" + "".join(f"{s:>10}" for s in stages))
        for t in tables:
            for r in readers:
                cells = [self.matrix.get((what, t, r, s), "-") for s in stages]
                if all(c == "-" for c in cells):
                    continue
                print(f"{t:<{width}}{r:<15}" + "".join(f"{c:>10}" for c in cells))


READERS = ["reference", "deltalake", "deltalake-sql", "duckdb", "medallion"]
KEYS = {"gold/daily_totals": ["flag", "day"], "quarantine/events_raw": ["_source_file", "_line"],
        "quarantine/extra_raw": ["_source_file", "_line"]}


class Context:
    def __init__(self, med, lake, sources):
        self.med = med
        self.lake = lake
        self.sources = sources
        self.report = Report()
        self.duck = None
        self.digests = {}       # table → digest at the latest full read
        self.timings = defaultdict(float)

    def tables(self):
        return sorted(os.path.relpath(os.path.dirname(p), self.lake)
                      for p in glob.glob(f"{self.lake}/*/*/_delta_log"))


def keys_of(table):
    return KEYS.get(table, ["rid"])


# ── stage checks ─────────────────────────────────────────────────────────────────────────────

def check_full_scans(ctx, stage, check_types=False, check_content=False):
    """Every reader reads every table identically; bronze/silver/gold match the model."""
    ctx.duck = new_duckdb()  # a fresh connection: no cached snapshot from an earlier stage
    refs = {}
    for table in ctx.tables():
        path = os.path.join(ctx.lake, table)
        t0 = time.time()
        ref = Reference(path)
        refs[table] = ref
        ctx.report.check(not ref.problems, f"[{stage}] log {table}: live files readable",
                         "; ".join(ref.problems[:5]))
        scans = {"reference": ref.scan(), **read_all(ctx, path, ref.types)}
        base = scans["reference"]
        bad = [r for r, s in scans.items() if s.error or s.digest() != base.digest()]
        for r, s in scans.items():
            ctx.report.cell("full scan", table, r, stage, r not in bad)
        sums = base.sums(ref.types)
        shown = ", ".join(f"Σ{c}={sums[c]}" for c in ("big", "d18", "d38", "x") if c in sums)
        agree = [r for r in scans if r not in bad and r != "reference"]
        ctx.report.check(
            not bad,
            f"[{stage}] read {table} v{ref.state.version}: {len(base.rows)} rows, digest {base.digest()}"
            + (f"; same in {', '.join(agree)}" if agree else "")
            + (f"; DIFFERENT in {', '.join(bad)}" if bad else "") + (f" ({shown})" if shown else ""),
            " | ".join(f"{r} differs from reference: {diff_scans(base, scans[r], keys_of(table))}"
                       for r in bad))
        for r in bad:  # the sums, to say at a glance whether values or only rows differ
            if not scans[r].error and scans[r].sums(ref.types) != sums:
                ctx.report.info(f"{r} sums {scans[r].sums(ref.types)} vs reference {sums}")
        ctx.digests[table] = base.digest()
        expected = ctx.sources.expected(table) if check_content else None
        if expected is not None:
            rows, cols = expected
            cols = cols or list(ref.types)
            want = scan_of("model", rows, {c: ref.types[c] for c in cols})
            got = Scan("reference", want.columns,
                       [tuple(r[base.columns.index(c)] for c in want.columns) for r in base.rows])
            ctx.report.check(want.digest() == got.digest(),
                             f"[{stage}] content {table}: the {len(want.rows)} rows the sources say",
                             diff_scans(want, got, keys_of(table)))
        if check_types:
            check_types_of(ctx, stage, table, path, ref)
        ctx.timings["full scans"] += time.time() - t0
    if check_content:
        check_quarantine_counts(ctx, stage, refs)
    return refs


def check_quarantine_counts(ctx, stage, refs):
    s = ctx.sources
    want = {"quarantine/events_raw": s.bad["events_raw"], "quarantine/extra_raw": s.bad["extra_raw"]}
    for table, n in want.items():
        got = len(refs[table].rows()) if table in refs else 0
        ctx.report.check(got == n, f"[{stage}] content {table}: {n} quarantined rows",
                         f"the table holds {got}")


def check_types_of(ctx, stage, table, path, ref):
    """The Delta schema has the declared types; each reader maps them to the right Arrow types."""
    want = {c: DELTA_TYPE.get(t, t.replace(" ", "")) for c, t in COLUMNS}
    if table.split("/")[0] in ("bronze", "silver") or table == "gold/events_by_region":
        wrong = {c: ref.delta_types.get(c) for c, t in want.items() if ref.delta_types.get(c) != t}
        ctx.report.check(not wrong, f"[{stage}] schema {table}: Delta types as declared",
                         f"differs: {wrong}")
    got = reader_types(ctx, path)
    for reader, types in got.items():
        if isinstance(types, str):
            ctx.report.check(False, f"[{stage}] types {table} in {reader}", types)
            continue
        if reader == "medallion":
            wrong = {c: types.get(c) for c, t in ref.delta_types.items()
                     if not medallion_type_ok(str(types.get(c)), t)}
        else:
            wrong = {c: str(types.get(c)) for c, t in ref.types.items()
                     if types.get(c) is None or not arrow_type_ok(types[c], t)}
        ctx.report.check(not wrong, f"[{stage}] types {table} in {reader}: every column's type "
                         "carries its Delta type", f"wrong: {wrong}")


def check_log(ctx, stage, refs):
    """Statistics bound the files' true values; partition folders match partitionValues;
    the checkpoint holds what the commits say."""
    for table, ref in refs.items():
        problems, widened, truncated = [], 0, 0
        for f in ref.files:
            st = f.stats
            if st.get("numRecords") is not None and int(st["numRecords"]) != len(f.rows):
                problems.append(f"{f.path}: numRecords {st['numRecords']} but {len(f.rows)} rows")
            for c, t in ref.types.items():
                if c in ref.partition_columns:
                    continue
                vals = [r[c] for r in f.rows if r[c] is not None]
                nulls = len(f.rows) - len(vals)
                nc = st.get("nullCount", {}).get(c)
                if nc is not None and int(nc) != nulls:
                    problems.append(f"{f.path}: nullCount.{c} = {nc} but {nulls} nulls")
                lo, hi = st.get("minValues", {}).get(c), st.get("maxValues", {}).get(c)
                if not vals or (lo is None and hi is None):
                    continue
                try:
                    lo, hi = parse_stat(lo, t), parse_stat(hi, t)
                except (ValueError, ArithmeticError) as e:
                    problems.append(f"{f.path}: {c} statistics unreadable ({e})")
                    continue
                if not lo <= min(vals):
                    problems.append(f"{f.path}: minValues.{c} = {lo!r} > true min {min(vals)!r}")
                true_max = max(vals)
                if pa.types.is_timestamp(t) and hi < true_max and hi >= true_max.replace(
                        microsecond=true_max.microsecond // 1000 * 1000):
                    truncated += 1  # ms statistics truncated, as Spark writes them; readers allow it
                elif not hi >= true_max:
                    problems.append(f"{f.path}: maxValues.{c} = {hi!r} < true max {true_max!r}")
                if pa.types.is_timestamp(t) and (lo != min(vals) or hi != true_max):
                    widened += 1  # the protocol's millisecond statistics
            # The folder of a partitioned file names its partition values, Hive-escaped.
            folder = unquote(f.path).split("/")[:-1]
            for c in ref.partition_columns:
                v = f.rows[0][c] if f.rows else None
                raw = ref.state.files[f.path].get("partitionValues", {}).get(c)
                seg = [s for s in folder if s.startswith(f"{c}=")]
                if not seg:
                    problems.append(f"{f.path}: no {c}= folder")
                    continue
                text = hive_unescape(seg[0][len(c) + 1:])
                want = None if text == "__HIVE_DEFAULT_PARTITION__" else text
                if want != (raw if raw != "" else None):
                    problems.append(f"{f.path}: folder says {c}={want!r}, partitionValues {raw!r} ({v!r})")
        note = [f"{widened} timestamp bounds at ms precision"] if widened else []
        note += [f"{truncated} of them maxima truncated to the ms below"] if truncated else []
        ctx.report.check(not problems, f"[{stage}] stats {table}: {len(ref.files)} files, "
                         "bounds and null counts hold" + (f" ({', '.join(note)})" if note else ""),
                         "; ".join(problems[:6]))
        check_checkpoint(ctx, stage, table, ref)


def check_checkpoint(ctx, stage, table, ref):
    path = ref.table
    commits, checkpoints = log_listing(path)
    latest = max(commits)
    lc_path = os.path.join(path, "_delta_log", "_last_checkpoint")
    if latest < CHECKPOINT_INTERVAL:
        return
    problems = []
    if not checkpoints:
        ctx.report.check(False, f"[{stage}] checkpoint {table}: one every {CHECKPOINT_INTERVAL} commits",
                         f"version {latest} and no checkpoint in _delta_log")
        return
    cp = max(checkpoints)
    if latest - cp >= CHECKPOINT_INTERVAL:
        problems.append(f"latest checkpoint v{cp} but table at v{latest}")
    if os.path.exists(lc_path):
        with open(lc_path) as f:
            lc = json.load(f)
        if lc.get("version") != cp:
            problems.append(f"_last_checkpoint says v{lc.get('version')}, newest checkpoint is v{cp}")
        rows = sum(pq.ParquetFile(p).metadata.num_rows for p in checkpoints[cp])
        if lc.get("size") not in (None, rows):
            problems.append(f"_last_checkpoint size {lc.get('size')} but the checkpoint has {rows} actions")
    else:
        problems.append("no _last_checkpoint")
    # The checkpoint must hold the same live files, with the same statistics, as the commits.
    a, b = replay(path, cp, use_checkpoint=True), replay(path, cp, use_checkpoint=False)
    if set(a.files) != set(b.files):
        problems.append(f"checkpoint v{cp} live files differ from the commits': "
                        f"{sorted(set(a.files) ^ set(b.files))[:3]}")
    else:
        for p in a.files:
            for k in ("stats", "partitionValues", "size"):
                if (a.files[p].get(k) or None) != (b.files[p].get(k) or None):
                    problems.append(f"checkpoint v{cp} {p}: {k} {a.files[p].get(k)!r} vs commit {b.files[p].get(k)!r}")
                    break
    if schema_types(a.metadata) != schema_types(b.metadata):
        problems.append(f"checkpoint v{cp} schema differs from the commits'")
    ctx.report.check(not problems, f"[{stage}] checkpoint {table}: v{cp} (table v{latest}, "
                     f"{len(checkpoints)} checkpoints) agrees with the commits", "; ".join(problems[:4]))
    # Readers opening only the checkpoint and later commits (as after log clean-up) see the same.
    with tempfile.TemporaryDirectory() as tmp:
        copy = os.path.join(tmp, os.path.basename(path))
        shutil.copytree(path, copy)
        for v, p in commits.items():
            if v <= cp:
                os.remove(os.path.join(copy, "_delta_log", os.path.basename(p)))
        scans = read_all(ctx, copy, ref.types)
        want = ctx.digests.get(table)
        bad = {r: s for r, s in scans.items() if s.error or s.digest() != want}
        ctx.report.check(not bad, f"[{stage}] checkpoint-only {table}: commits ≤ v{cp} deleted, "
                         f"{', '.join(scans)} read the same rows",
                         " | ".join(f"{r}: {s.error or 'digest ' + s.digest()}" for r, s in bad.items()))


# ── filters ──────────────────────────────────────────────────────────────────────────────────

@dataclass
class Pred:
    col: str
    op: str       # = < <= > >= isnull notnull in
    value: object  # typed Python value (a list for `in`)
    t: pa.DataType
    delta_type: str

    def lit(self, v, dialect):
        t = self.t
        if pa.types.is_boolean(t):
            return "true" if v else "false"
        if pa.types.is_string(t):
            return sql_str(v)
        if pa.types.is_timestamp(t):
            if dialect == "duckdb":
                return f"CAST('{v.astimezone(UTC).strftime('%Y-%m-%d %H:%M:%S.%f')}+00:00' AS TIMESTAMPTZ)"
            return (f"arrow_cast('{v.astimezone(UTC).strftime('%Y-%m-%dT%H:%M:%S.%fZ')}', "
                    f"'Timestamp(Microsecond, Some(\"UTC\"))')")
        sqltype = {"long": "BIGINT", "integer": "INT", "double": "DOUBLE", "date": "DATE"}.get(
            self.delta_type, self.delta_type.upper())
        text = repr(v) if isinstance(v, float) else text_of(v)
        return f"CAST('{text}' AS {sqltype})"

    def sql(self, dialect):
        c = f'"{self.col}"'
        if self.op == "isnull":
            return f"{c} IS NULL"
        if self.op == "notnull":
            return f"{c} IS NOT NULL"
        if self.op == "in":
            return f"{c} IN ({', '.join(self.lit(v, dialect) for v in self.value)})"
        return f"{c} {self.op} {self.lit(self.value, dialect)}"

    def arrow(self):
        f = pc.field(self.col)
        if self.op == "isnull":
            return f.is_null()
        if self.op == "notnull":
            return f.is_valid()
        if self.op == "in":
            return f.isin(pa.array(self.value, self.t))
        v = pa.scalar(self.value, self.t)
        return {"=": f == v, "<": f < v, "<=": f <= v, ">": f > v, ">=": f >= v}[self.op]

    def dnf(self):
        """deltalake's tuple form (Python values) of equality and IN; the other comparisons
        reach the same pyarrow expression as `arrow()`."""
        if self.op not in ("=", "in"):
            return None
        return [(self.col, self.op, list(self.value) if self.op == "in" else self.value)]

    def matches(self, v):
        if self.op == "isnull":
            return v is None
        if self.op == "notnull":
            return v is not None
        if v is None:
            return False
        if self.op == "in":
            return v in self.value
        return {"=": v == self.value, "<": v < self.value, "<=": v <= self.value,
                ">": v > self.value, ">=": v >= self.value}[self.op]

    def __str__(self):
        return self.sql("medallion")


def neighbour(v, t, delta_type, d):
    """The value just below (d=-1) or above (d=+1) v in its type, or None past the range."""
    if pa.types.is_boolean(t):
        return None
    if pa.types.is_integer(t):
        bits = t.bit_width - 1
        w = v + d
        return w if -(2**bits) <= w < 2**bits else None
    if pa.types.is_floating(t):
        w = math.nextafter(v, d * math.inf)
        return w if math.isfinite(w) else None
    if pa.types.is_decimal(t):
        w = v + d * Decimal(1).scaleb(-t.scale)
        return w if abs(w) < Decimal(10) ** (t.precision - t.scale) else None
    if pa.types.is_date(t):
        try:
            return v + timedelta(days=d)
        except OverflowError:
            return None
    if pa.types.is_timestamp(t):
        return v + timedelta(microseconds=d)
    if pa.types.is_string(t):
        return (v[:-1] if v else None) if d < 0 else v + " "
    return None


def build_predicates(ref):
    """Predicates at, just below and just above per-file minima and maxima of every column,
    NULL tests, and every value of each partition column."""
    preds = []
    for c, t in ref.types.items():
        if c in ("rid", "id"):  # keys: bigint is covered by `big`
            continue
        dtype = ref.delta_types[c]
        if pa.types.is_boolean(t):
            preds += [Pred(c, "=", True, t, dtype), Pred(c, "=", False, t, dtype)]
        else:
            bounds = []
            per_file = [[r[c] for r in f.rows if r[c] is not None] for f in ref.files]
            per_file = [vs for vs in per_file if vs]
            for pick in (min, max):  # a middle file's bound and the table's
                vals = sorted({pick(vs) for vs in per_file})
                if vals:
                    bounds += [vals[len(vals) // 2], pick(vals)]
            values = []
            for v in bounds:
                if v not in values:
                    values.append(v)
            for v in values:
                below, above = neighbour(v, t, dtype, -1), neighbour(v, t, dtype, +1)
                preds += [Pred(c, op, v, t, dtype) for op in ("=", "<", "<=", ">", ">=")]
                preds += [Pred(c, "=", w, t, dtype) for w in (below, above) if w is not None]
            if c in ref.partition_columns:
                distinct = sorted({r[c] for r in ref.rows() if r[c] is not None})
                preds += [Pred(c, "=", v, t, dtype) for v in distinct if v not in values]
                if len(distinct) >= 2:
                    preds.append(Pred(c, "in", distinct[: 3], t, dtype))
        preds += [Pred(c, "isnull", None, t, dtype), Pred(c, "notnull", None, t, dtype)]
    return preds


def key_text(ref, row, keys):
    return tuple(canon(row[k], ref.types[k]) for k in keys)


def check_filters(ctx, stage, refs, tables):
    """Each reader's filtered rows equal a full scan filtered here."""
    ctx.duck = new_duckdb()
    for table in tables:
        t0 = time.time()
        ref = refs[table]
        path = ref.table
        keys = keys_of(table)
        preds = build_predicates(ref)
        expected, holding = [], []
        for p in preds:
            hits = [(f, r) for f in ref.files for r in f.rows if p.matches(r[p.col])]
            expected.append(sorted((key_text(ref, r, keys) for _, r in hits), key=repr))
            holding.append({os.path.realpath(f.local) for f, _ in hits})
        got = defaultdict(dict)  # reader → pred index → sorted keys | error text
        key_sql = ", ".join(f'"{k}"' for k in keys)

        def to_keys(rows):
            return sorted((tuple(canon(r.get(k), ref.types[k]) for k in keys) for r in rows), key=repr)

        dt = deltalake.DeltaTable(path)
        ds = dt.to_pyarrow_dataset()
        qb = deltalake.QueryBuilder().register("t", dt)
        pruned = candidates = 0
        pruning_misses = []
        for i, p in enumerate(preds):
            for reader, run in (
                ("duckdb", lambda: ctx.duck.execute(
                    f"SELECT {key_sql} FROM delta_scan({sql_str(path)}) WHERE {p.sql('duckdb')}"
                ).to_arrow_table().to_pylist()),
                ("deltalake", lambda: ds.to_table(columns=keys, filter=p.arrow()).to_pylist()),
                ("deltalake-dnf", lambda: None if p.dnf() is None else ds.to_table(
                    columns=keys, filter=pq.filters_to_expression(p.dnf())).to_pylist()),
                ("deltalake-sql", lambda: pa.table(qb.execute(
                    f'SELECT {key_sql} FROM "t" WHERE {p.sql("datafusion")}').read_all()).to_pylist()),
            ):
                try:
                    rows = run()
                    if rows is not None:
                        got[reader][i] = to_keys(rows)
                except Exception as e:  # noqa: BLE001
                    got[reader][i] = f"error: {e!r}"[:300]
            # deltalake's file pruning keeps every file holding a matching row.
            try:
                kept = {os.path.realpath(unquote(u) if not os.path.exists(u) else u)
                        for u in dt.file_uris(file_pruning_predicate=p.sql("datafusion"))}
                candidates += len(ref.files)
                pruned += len(ref.files) - len(kept)
                lost = holding[i] - kept
                if lost:
                    pruning_misses.append(f"{p}: drops {sorted(os.path.relpath(x, path) for x in lost)[:2]}")
                got["deltalake-prune"][i] = expected[i]
            except Exception as e:  # noqa: BLE001
                got["deltalake-prune"][i] = f"error: {e!r}"[:300]
        # Medallion: many predicates per process, one UNION ALL branch (and scan) each.
        med = {}
        batch = 60
        for start in range(0, len(preds), batch):
            idx = list(range(start, min(start + batch, len(preds))))
            sql = " UNION ALL ".join(f'SELECT {i} AS "_p", {key_sql} FROM "t" WHERE {preds[i].sql("datafusion")}'
                                     for i in idx)
            try:
                rows = ctx.med.query(sql, path)
                by = defaultdict(list)
                for r in rows:
                    by[int(r["_p"])].append(r)
                for i in idx:
                    med[i] = to_keys(by[i])
            except RuntimeError:  # find the predicate Medallion cannot run
                for i in idx:
                    try:
                        med[i] = to_keys(ctx.med.query(
                            f'SELECT {key_sql} FROM "t" WHERE {preds[i].sql("datafusion")}', path))
                    except RuntimeError as e:
                        med[i] = f"error: {e}"[:300]
        got["medallion"] = med
        # Files whose statistics have a nullCount but no bounds for a column (Medallion writes
        # none for booleans and strings over 32 characters, as the protocol allows).
        unbounded = defaultdict(set)
        files_of_key = defaultdict(set)
        by_path = {f.path: f for f in ref.files}
        for f in ref.files:
            for c in ref.types:
                if (c not in ref.partition_columns and c in f.stats.get("nullCount", {})
                        and c not in f.stats.get("minValues", {})):
                    unbounded[c].add(f.path)
            for r in f.rows:
                files_of_key[key_text(ref, r, keys)].add(f.path)

        def deltalake_no_bounds_bug(i, result):
            """deltalake's pyarrow datasets turn a column without bounds into the guarantee
            `col >= null`, dropping the file for every filter on that column: a miss is this
            bug when the only difference is missing rows, all in such files."""
            if isinstance(result, str) or Counter(result) - Counter(expected[i]):
                return False
            missing = (Counter(expected[i]) - Counter(result)).elements()
            return all(files_of_key[k] <= unbounded[preds[i].col] for k in missing)

        for reader in ("duckdb", "deltalake", "deltalake-dnf", "deltalake-sql", "deltalake-prune", "medallion"):
            res = got[reader]
            wrong = [i for i, v in res.items() if v != expected[i]]
            known = []
            if reader in ("deltalake", "deltalake-dnf"):
                known = [i for i in wrong if deltalake_no_bounds_bug(i, res[i])]
                wrong = [i for i in wrong if i not in known]
            errors = [i for i in wrong if isinstance(res[i], str)]
            detail = []
            for i in wrong[:4]:
                v = res[i]
                if isinstance(v, str):
                    detail.append(f"{preds[i]} → {v}")
                else:
                    missing = sorted((Counter(expected[i]) - Counter(v)).elements(), key=repr)
                    extra = sorted((Counter(v) - Counter(expected[i])).elements(), key=repr)
                    detail.append(f"{preds[i]} → {len(v)} rows, expected {len(expected[i])}"
                                  f" (missing {missing[:3]}, extra {extra[:3]})")
                    if missing:  # the file holding a missing row, and its statistics
                        c = preds[i].col
                        for fp in sorted(files_of_key[missing[0]])[:1]:
                            st = by_path[fp].stats
                            detail.append(
                                f"{missing[0]} is in v{ref.state.version} file {fp} with "
                                f"min {st.get('minValues', {}).get(c)!r}, max "
                                f"{st.get('maxValues', {}).get(c)!r}, nullCount "
                                f"{st.get('nullCount', {}).get(c)!r} for {c}")
            if wrong:
                by_col = Counter(preds[i].col for i in wrong)
                detail.append(f"wrong on {dict(by_col)}")
            if reader == "deltalake-prune":
                detail = pruning_misses[:4] + detail
                wrong = wrong + pruning_misses
            ok = not wrong
            ctx.report.cell("filters", table, reader, stage, ok)
            extra = f", {pruned} of {candidates} file visits pruned" if reader == "deltalake-prune" else ""
            ctx.report.check(ok, f"[{stage}] filters {table} via {reader}: {len(res)} predicates"
                             f" ({sum(1 for i in res if expected[i])} with matches){extra}"
                             + (f", {len(errors)} errors" if errors else "")
                             + (f", {len(known)} known-bug misses below" if known else ""),
                             " | ".join(detail))
            if known:
                cols = dict(Counter(preds[i].col for i in known))
                ctx.report.known(
                    f"[{stage}] filters {table} via {reader}: {len(known)} predicates on {cols} "
                    "miss rows of files without min/max for the column",
                    "deltalake bug: its pyarrow dataset guarantees `col >= null` for a column "
                    "whose statistics have nullCount but no bounds, so filters drop the file "
                    f"(e.g. {preds[known[0]]}: {len(res[known[0]])} of {len(expected[known[0]])} rows)")
        ctx.timings["filters"] += time.time() - t0


# ── history, time travel, maintenance ───────────────────────────────────────────────────────

def check_history(ctx, stage, refs, optimized=()):
    for table in refs:
        path = os.path.join(ctx.lake, table)
        commits, _ = log_listing(path)
        problems = []
        try:
            entries = json.loads(ctx.med("inspect", path, "--json").stdout)
        except Exception as e:  # noqa: BLE001
            ctx.report.check(False, f"[{stage}] inspect {table}", str(e))
            continue
        versions = [e["version"] for e in entries]
        if versions != sorted(commits):
            problems.append(f"versions {versions} but commits {sorted(commits)}")
        dl = {h["version"]: h for h in deltalake.DeltaTable(path).history()}
        prev_rows = {}
        for e in entries:
            v = e["version"]
            if v not in commits:
                continue
            actions = read_commit(commits[v])
            info = next((a["commitInfo"] for a in actions if "commitInfo" in a), {})
            if e.get("operation") != info.get("operation"):
                problems.append(f"v{v}: operation {e.get('operation')!r}, log says {info.get('operation')!r}")
            if v in dl and dl[v].get("operation") != e.get("operation"):
                problems.append(f"v{v}: deltalake's history says {dl[v].get('operation')!r}")
            adds = [a["add"] for a in actions if "add" in a]
            removes = [a["remove"] for a in actions if "remove" in a]
            rows = lambda add: int(json.loads(add["stats"])["numRecords"])
            added = sum(rows(a) for a in adds)
            removed = sum(prev_rows.get(r["path"], 0) for r in removes)
            if (e["files_added"], e["files_removed"]) != (len(adds), len(removes)):
                problems.append(f"v{v}: files +{e['files_added']} -{e['files_removed']}, "
                                f"log has +{len(adds)} -{len(removes)}")
            if e.get("rows_added") != added or e.get("rows_removed") != removed:
                problems.append(f"v{v}: rows +{e.get('rows_added')} -{e.get('rows_removed')}, "
                                f"log has +{added} -{removed}")
            dc = any(a.get("dataChange", True) for a in adds + removes) if adds or removes else True
            if e.get("operation") == "OPTIMIZE" and (e.get("data_change") or dc or added != removed):
                problems.append(f"v{v}: OPTIMIZE with dataChange or rows +{added} -{removed}")
            for r in removes:
                prev_rows.pop(r["path"], None)
            for a in adds:
                prev_rows[a["path"]] = rows(a)
        if table in optimized and not any(e.get("operation") == "OPTIMIZE" for e in entries):
            problems.append("no OPTIMIZE entry though optimize compacted the table")
        ops = Counter(e.get("operation") for e in entries)
        ctx.report.check(not problems, f"[{stage}] inspect {table}: {len(entries)} entries for "
                         f"{len(commits)} commits ({', '.join(f'{k} ×{n}' for k, n in ops.items())})",
                         "; ".join(problems[:5]))


def check_time_travel(ctx, stage, refs):
    """Every version: medallion PATH@V count = deltalake version=V = duckdb version := V =
    the log's numRecords; version 3 also row for row."""
    ctx.duck = new_duckdb()
    for table, ref in refs.items():
        path = ref.table
        commits, _ = log_listing(path)
        problems = []
        for v in sorted(commits):
            want = sum(int(json.loads(a["stats"])["numRecords"]) for a in replay(path, v).files.values())
            counts = {}
            try:
                counts["medallion"] = int(ctx.med.query('SELECT count(*) AS "c" FROM "t"', f"{path}@{v}")[0]["c"])
            except Exception as e:  # noqa: BLE001
                counts["medallion"] = f"error {str(e)[:200]}"
            try:
                counts["deltalake"] = deltalake.DeltaTable(path, version=v).to_pyarrow_table().num_rows
            except Exception as e:  # noqa: BLE001
                counts["deltalake"] = f"error {e!r}"[:200]
            try:
                counts["duckdb"] = ctx.duck.execute(
                    f"SELECT count(*) FROM delta_scan({sql_str(path)}, version := {v})").fetchone()[0]
            except Exception as e:  # noqa: BLE001
                counts["duckdb"] = f"error {e!r}"[:200]
            if any(c != want for c in counts.values()):
                problems.append(f"v{v}: log {want}, {counts}")
        ctx.report.check(not problems, f"[{stage}] time travel {table}: counts at all "
                         f"{len(commits)} versions agree (medallion @V, deltalake, duckdb, log)",
                         "; ".join(problems[:4]))
        v = TIME_TRAVEL_VERSION
        if v in commits:
            old = Reference(path, v)
            scans = {"reference": old.scan(), **read_all(ctx, path, old.types, version=v)}
            base = scans["reference"]
            bad = [r for r, s in scans.items() if s.error or s.digest() != base.digest()]
            ctx.report.check(not bad, f"[{stage}] time travel {table}@{v}: {len(base.rows)} rows "
                             f"identical in {', '.join(scans)}",
                             " | ".join(f"{r}: {diff_scans(base, scans[r], keys_of(table))}" for r in bad))


def check_same_rows(ctx, stage, before):
    changed = [t for t in before if ctx.digests.get(t) != before[t]]
    ctx.report.check(not changed, f"[{stage}] every table holds the same rows as before {stage}",
                     f"changed: {changed}")


def data_files(table):
    out = set()
    for root, dirs, files in os.walk(table):
        if "_delta_log" in dirs:
            dirs.remove("_delta_log")
        for f in files:
            if f.endswith(".parquet"):
                out.add(os.path.realpath(os.path.join(root, f)))
    return out


def live_files(table):
    return {os.path.realpath(os.path.join(table, unquote(p))) for p in replay(table).files}


def check_optimize(ctx, refs_before):
    stage = "optimize"
    before = {t: (ctx.digests[t], len(r.files), r.state.version) for t, r in refs_before.items()}
    p = ctx.med("optimize", "--lake", ctx.lake, "--json", check=False)
    if not ctx.report.check(p.returncode == 0, "[optimize] medallion optimize --lake exits 0", p.stderr[-1500:]):
        return set()
    optimized = set()
    for table in refs_before:
        path = os.path.join(ctx.lake, table)
        commits, _ = log_listing(path)
        v = max(commits)
        if v == before[table][2]:
            ctx.report.info(f"optimize left {table} as it was ({before[table][1]} files)")
            continue
        optimized.add(table)
        actions = read_commit(commits[v])
        info = next((a["commitInfo"] for a in actions if "commitInfo" in a), {})
        changes = [a.get("add") or a.get("remove") for a in actions if "add" in a or "remove" in a]
        problems = []
        if v != before[table][2] + 1:
            problems.append(f"{v - before[table][2]} commits, expected one")
        if info.get("operation") != "OPTIMIZE":
            problems.append(f"operation {info.get('operation')!r}")
        if any(c.get("dataChange", True) for c in changes):
            problems.append("an add or remove has dataChange=true")
        after = replay(path)
        ctx.report.check(not problems, f"[optimize] {table}: v{v} OPTIMIZE, "
                         f"{before[table][1]} → {len(after.files)} files, dataChange=false",
                         "; ".join(problems))
    return optimized


def check_vacuum(ctx, refs):
    stage = "vacuum"
    tables = {t: os.path.join(ctx.lake, t) for t in refs}
    on_disk = {t: data_files(p) for t, p in tables.items()}
    unreferenced = {t: on_disk[t] - live_files(p) for t, p in tables.items()}
    # Without --force, a retention shorter than the table's own is refused and nothing goes.
    p = ctx.med("vacuum", "--lake", ctx.lake, "--retention-hours", "0", "--apply", check=False)
    kept = all(data_files(tables[t]) == on_disk[t] for t in tables)
    ctx.report.check(p.returncode != 0 and kept, "[vacuum] retention 0 without --force is refused, "
                     "nothing deleted", f"exit {p.returncode}, files kept: {kept}")
    # Dry run: lists exactly the unreferenced files, deletes nothing.
    p = ctx.med("vacuum", "--lake", ctx.lake, "--retention-hours", "0", "--force", "--json", check=False)
    listed = set()
    if p.returncode == 0:
        for r in json.loads(p.stdout):
            loc = r.get("table", "")
            for f in r.get("files", []):
                f = f[0] if isinstance(f, list) else f
                cands = [f] if os.path.isabs(f) else [os.path.join(loc, f), os.path.join(loc, unquote(f))]
                listed.add(os.path.realpath(next((c for c in cands if os.path.exists(c)), cands[-1])))
    want = set().union(*unreferenced.values())
    kept = all(data_files(tables[t]) == on_disk[t] for t in tables)
    ctx.report.check(p.returncode == 0 and kept and listed == want,
                     f"[vacuum] dry run lists the {len(want)} unreferenced files and deletes nothing",
                     f"exit {p.returncode} {p.stderr[-500:]}; listed {len(listed)}, unreferenced {len(want)}; "
                     f"kept {kept}; not listed {sorted(want - listed)[:3]}, "
                     f"listed but not unreferenced {sorted(listed - want)[:3]}")
    p = ctx.med("vacuum", "--lake", ctx.lake, "--retention-hours", "0", "--force", "--apply", check=False)
    ctx.report.check(p.returncode == 0, "[vacuum] medallion vacuum --retention-hours 0 --force --apply exits 0",
                     p.stderr[-1500:])
    for t, path in tables.items():
        now = data_files(path)
        live = live_files(path)
        ctx.report.check(now == live, f"[vacuum] {t}: {len(on_disk[t] - now)} files removed, "
                         f"the {len(live)} live files remain and nothing else",
                         f"still there but unreferenced: {sorted(os.path.relpath(x, path) for x in now - live)[:3]}; "
                         f"live but gone: {sorted(os.path.relpath(x, path) for x in live - now)[:3]}")


# ── the life of the lake ─────────────────────────────────────────────────────────────────────

def run_pipeline(ctx, root, run):
    ctx.sources.add_run(run)
    t0 = time.time()
    p = ctx.med("run", f"{root}/pipeline.toml", "--lake", ctx.lake, "--engine", "native", check=False)
    ctx.timings["medallion run"] += time.time() - t0
    ctx.report.check(p.returncode == 0, f"[run{run}] medallion run exits 0", (p.stderr or p.stdout)[-2000:])
    return p.returncode == 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("medallion")
    ap.add_argument("--runs", type=int, default=12)
    ap.add_argument("--keep", help="work in this folder and keep it (for repros)")
    args = ap.parse_args()
    started = time.time()
    root = os.path.abspath(args.keep) if args.keep else tempfile.mkdtemp(prefix="medallion-lifecycle-")
    if args.keep:
        shutil.rmtree(root, ignore_errors=True)
        os.makedirs(root)
    ctx = Context(Medallion(os.path.abspath(args.medallion)), os.path.join(root, "lake"), Sources(root))
    print(f"work folder {root}; medallion {ctx.med.binary}; deltalake {deltalake.__version__}, "
          f"duckdb {duckdb.__version__}, pyarrow {pa.__version__}")
    full_after = {1, 3, 6, 9, args.runs}
    filters_after = {args.runs}
    stages = [f"run{r}" for r in sorted(full_after)] + ["optimize", "vacuum", f"run{args.runs + 1}"]
    refs = {}
    try:
        for run in range(1, args.runs + 1):
            if not run_pipeline(ctx, root, run):
                raise SystemExit("the pipeline failed; nothing more to check")
            if run in full_after:
                refs = check_full_scans(ctx, f"run{run}", check_types=run in (1, args.runs),
                                        check_content=run in (1, args.runs))
                check_log(ctx, f"run{run}", refs)
            if run in filters_after:
                check_filters(ctx, f"run{run}", refs, [t for t in refs if not t.startswith("quarantine")])

        optimized = check_optimize(ctx, refs)
        before = dict(ctx.digests)
        refs = check_full_scans(ctx, "optimize")
        check_same_rows(ctx, "optimize", before)
        check_log(ctx, "optimize", refs)
        check_history(ctx, "optimize", refs, optimized)
        check_time_travel(ctx, "optimize", refs)  # before vacuum: old versions' files still exist
        check_filters(ctx, "optimize", refs, [t for t in refs if t in optimized and not t.startswith("quarantine")])

        check_vacuum(ctx, refs)
        before = dict(ctx.digests)
        refs = check_full_scans(ctx, "vacuum")
        check_same_rows(ctx, "vacuum", before)
        check_log(ctx, "vacuum", refs)

        last = f"run{args.runs + 1}"
        if run_pipeline(ctx, root, args.runs + 1):
            refs = check_full_scans(ctx, last, check_types=True, check_content=True)
            check_log(ctx, last, refs)
            check_history(ctx, last, refs, optimized)
            check_filters(ctx, last, refs, [t for t in refs if not t.startswith("quarantine")])
    finally:
        rep = ctx.report
        rep.print_matrix("full scan", stages, READERS)
        rep.print_matrix("filters", stages, ["duckdb", "deltalake", "deltalake-dnf", "deltalake-sql",
                                             "deltalake-prune", "medallion"])
        took = time.time() - started
        print(f"\n{rep.count - len(rep.failed)} of {rep.count} checks passed in {took:.0f} s "
              f"({ctx.med.calls} medallion calls; " + ", ".join(f"{k} {v:.0f} s" for k, v in ctx.timings.items()) + ")")
        if rep.known_bugs:
            print(f"{len(rep.known_bugs)} known reader bugs (not Medallion's, not counted):")
            for k in rep.known_bugs:
                print(f"  {k}")
        if rep.failed:
            print(f"{len(rep.failed)} FAILED:")
            for f in rep.failed:
                print(f"  {f}")
            print(f"work folder kept for inspection: {root}")
        elif not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    sys.exit(1 if ctx.report.failed else 0)


if __name__ == "__main__":
    main()
