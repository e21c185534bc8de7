"""Medallion reads Delta tables written by deltalake exactly as deltalake and DuckDB do.

Usage: python3 tests/delta_corpus.py MEDALLION_BIN [--corpus DIR] [--tables NAME,...]
                                     [--sources disk,http]

tests/delta_readers.py checks the other direction (Medallion writes, others read). This script
writes a corpus of small, deterministic Delta tables with the `deltalake` package (delta-rs),
each exercising one part of the protocol a reader must get right:

  plain             25 appends with a checkpoint every 5 commits (the JSON commits stay)
  checkpointed      appends and deletes around checkpoints, then the log before the last
                    checkpoint is cleaned up: only the checkpoint and the commits after it remain
  overwrite_delete  an overwrite and two DeltaTable.delete calls: `remove` actions in the log
  compacted         optimize.compact() then vacuum(retention_hours=0): removed files are gone
  part_str          partitioned by a string with awkward values (space, =, %, /, +, ', "%2F",
                    é, 日本, "" and NULL): add.path is URI-encoded, folders are escaped
  part_int_date     partitioned by an int and a date, with NULLs and pre-1970 dates
  schema_evolution  appends that add nullable columns (schema_mode="merge"), then one without
  deletion_vectors  the deletionVectors feature, and a file re-added with an inline deletion vector
                    (written by hand: deltalake never writes one): Medallion must refuse, naming it
  column_mapping    delta.columnMapping.mode=name: Medallion must refuse, naming the feature

Every table has int32, int64 (with values above 2^53), float64, decimal(18,4), decimal(38,10),
string (non-ASCII), bool, date and UTC timestamp columns with NULLs and edge values.

For each readable table, from disk and over HTTP (tests/rangeserve.py serving the corpus),
Medallion (`query --format json --engine native`) is compared with deltalake
(`DeltaTable.to_pyarrow_table()`, filters through `to_pyarrow_dataset()`) and DuckDB
(`delta_scan`, read from disk both times) on: count(*), the exact sum of each numeric column,
an order-independent digest of every row, and the rows matching each of a few WHERE
predicates. One line per (table, source, check), then a summary; exits 1 on any FAIL.

A multi-part checkpoint is not in the corpus: deltalake writes only single-file checkpoints
(delta-io/delta-rs#288).
"""

import argparse
import concurrent.futures
import decimal
import glob
import hashlib
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import deltalake
import duckdb
import pyarrow as pa
from deltalake import DeltaTable, TableFeatures, write_deltalake

RANGESERVE = Path(__file__).with_name("rangeserve.py")
TIMEOUT_SECONDS = 120
PANIC_MARKERS = ("panicked", "RUST_BACKTRACE")
UTC = timezone.utc
BIG = 2**53  # the first integer above which float64 cannot hold every int64

# Exact decimal arithmetic for the reference sums: the default context rounds to 28 digits,
# and a sum of decimal(38,10) values has up to 38.
decimal.getcontext().prec = 80


# ---------------------------------------------------------------------------------------------
# the corpus


SCHEMA = pa.schema([
    ("id", pa.int64()),
    ("i32", pa.int32()),
    ("i64", pa.int64()),
    ("f64", pa.float64()),
    ("d18", pa.decimal128(18, 4)),
    ("d38", pa.decimal128(38, 10)),
    ("s", pa.string()),
    ("b", pa.bool_()),
    ("dt", pa.date32()),
    ("ts", pa.timestamp("us", tz="UTC")),
])

STRINGS = ["alpha", "bêta", "γάμμα", "日本語", "emoji 🦆", "", 'quote " and \'',
           "tab\tand\nnewline", "back\\slash", "x=y/z%20"]

# Values at the edges of each type; the first batch of every table starts with these rows.
# Sums stay in range in every engine: the int64 values are below 2^55 in magnitude (a few
# hundred of them stay below 2^63), the decimal(38,10) extremes are 38 digits but < 10^28 / 8.
EDGE_ROWS = [
    dict(i32=2**31 - 1, i64=BIG + 1, f64=0.125, d18=Decimal("99999999999999.9999"),
         d38=Decimal("1234567890123456789012345678.9012345678"), s="日本語", b=True,
         dt=date(1969, 12, 31), ts=datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)),
    dict(i32=-2**31, i64=-(BIG + 1), f64=-1024.875, d18=Decimal("-99999999999999.9999"),
         d38=Decimal("-1234567890123456789012345678.9012345678"), s="", b=False,
         dt=date(1970, 1, 1), ts=datetime(1970, 1, 1, 0, 0, 0, 1, tzinfo=UTC)),
    dict(i32=0, i64=BIG, f64=0.0, d18=Decimal("0.0001"), d38=Decimal("-0.0000000001"),
         s="emoji 🦆", b=None, dt=date(1, 1, 1), ts=datetime(2500, 1, 1, tzinfo=UTC)),
    dict(i32=None, i64=BIG + 2, f64=None, d18=None, d38=None, s=None, b=None,
         dt=date(9999, 12, 31), ts=None),
]

# float64 values that are not multiples of a power of two, in the `plain` table only. They take
# part in every row digest (compared exactly) but not in the sums: float addition is not
# associative, so engines adding in different orders may differ in the last bit with no
# difference in the data.
F64_RAW = [0.1, 1 / 3, -0.0, 1e-300, 5e-324, 1.7976931348623157e308, -2.5e-8, None,
           123456789.123456789]
NOT_SUMMED = {"f64_raw"}


def batch(seed, n, first_id, edges=False):
    """`n` rows of SCHEMA (plus the edge rows if `edges`), ids from `first_id`, from `seed`."""
    rng = random.Random(seed)

    def maybe(v):
        return None if rng.random() < 0.12 else v

    rows = [dict(r) for r in EDGE_ROWS] if edges else []
    for _ in range(n):
        magnitude = BIG + rng.randint(1, 2**54) if rng.random() < 0.5 else rng.randint(0, 10**6)
        rows.append(dict(
            i32=maybe(rng.randint(-2**31, 2**31 - 1)),
            i64=maybe(magnitude * rng.choice((1, -1))),
            # Multiples of 1/8 below 2^40: every partial sum is exact, in any order.
            f64=maybe(rng.randint(-8 * 10**6, 8 * 10**6) / 8),
            d18=maybe(Decimal(rng.randint(-10**18 + 1, 10**18 - 1)).scaleb(-4)),
            d38=maybe(Decimal(rng.randint(-10**30, 10**30)).scaleb(-10)),
            s=maybe(rng.choice(STRINGS)),
            b=maybe(rng.random() < 0.5),
            dt=maybe(date(1960, 1, 1) + timedelta(days=rng.randint(0, 80 * 365))),
            ts=maybe(datetime(1960, 1, 1, tzinfo=UTC)
                     + timedelta(microseconds=rng.randint(0, 80 * 365 * 86400 * 10**6))),
        ))
    for i, r in enumerate(rows):
        r["id"] = first_id + i
    return pa.Table.from_pylist(rows, schema=SCHEMA)


def with_column(table, name, typ, values, first=False):
    """`table` with one more column; `values` is cycled over the rows."""
    col = pa.array([values[i % len(values)] for i in range(table.num_rows)], typ)
    if first:
        return pa.Table.from_arrays([col, *table.columns], names=[name, *table.column_names])
    return table.append_column(pa.field(name, typ), col)


def log_files(path):
    return sorted(os.listdir(os.path.join(path, "_delta_log")))


def checkpoint_versions(path):
    return [int(f.split(".")[0]) for f in log_files(path) if ".checkpoint." in f]


def add_actions(path):
    """The live files' add actions as dicts (deltalake returns an arro3 table)."""
    return pa.table(DeltaTable(path).get_add_actions(flatten=True)).to_pylist()


def build_plain(path):
    config = {"delta.checkpointInterval": "5"}
    for v in range(25):
        t = with_column(batch(100 + v, 8, v * 100, edges=v == 0), "f64_raw", pa.float64(),
                        F64_RAW[v % 3:] + F64_RAW[:v % 3])
        write_deltalake(path, t, mode="append", configuration=config if v == 0 else None)
    return [f"25 commits, checkpoints at versions {checkpoint_versions(path)}, "
            "all JSON commits kept"]


def build_checkpointed(path):
    config = {"delta.checkpointInterval": "5", "delta.logRetentionDuration": "interval 0 seconds"}
    write_deltalake(path, batch(200, 10, 0, edges=True), configuration=config)
    for v in range(1, 12):
        write_deltalake(path, batch(200 + v, 10, v * 100), mode="append")
    dt = DeltaTable(path)
    dt.delete("i32 > 1000000000")  # version 12: removes before the checkpoints at 14 and 19
    for v in range(13, 21):
        write_deltalake(path, batch(200 + v, 10, v * 100), mode="append")
    dt = DeltaTable(path)
    dt.delete("b = false")  # version 21: removes files that the checkpoint at 19 lists
    write_deltalake(path, batch(222, 10, 2200), mode="append")
    dt = DeltaTable(path)
    dt.cleanup_metadata()
    first_json = min(int(f.split(".")[0]) for f in log_files(path) if f.endswith(".json"))
    if first_json == 0:
        raise SystemExit("deltalake's cleanup_metadata kept commit 0: "
                         "the table would not need its checkpoint")
    return [f"v{dt.version()}, checkpoints at {checkpoint_versions(path)}; log holds only "
            f"{', '.join(f for f in log_files(path))}"]


def build_overwrite_delete(path):
    write_deltalake(path, batch(300, 40, 0, edges=True))
    write_deltalake(path, batch(301, 40, 1000), mode="append")
    write_deltalake(path, batch(302, 30, 2000, edges=True), mode="overwrite")
    write_deltalake(path, batch(303, 30, 3000), mode="append")
    dt = DeltaTable(path)
    first = dt.delete("i32 > 0")
    second = dt.delete("s = 'bêta'")
    write_deltalake(path, batch(306, 10, 6000), mode="append")
    return [f"v{DeltaTable(path).version()}: overwrite at v2, deletes removed "
            f"{first.get('num_deleted_rows')} and {second.get('num_deleted_rows')} rows"]


def build_compacted(path):
    for v in range(12):
        write_deltalake(path, batch(400 + v, 6, v * 100, edges=v == 0), mode="append")
    DeltaTable(path).delete("b = true")  # rewrites the 12 files as one
    for v in range(12, 18):
        write_deltalake(path, batch(400 + v, 6, v * 100), mode="append")
    dt = DeltaTable(path)
    metrics = dt.optimize.compact()
    vacuumed = dt.vacuum(retention_hours=0, enforce_retention_duration=False, dry_run=False)
    write_deltalake(path, batch(420, 6, 2000), mode="append")
    data = [f for f in os.listdir(path) if f.endswith(".parquet")]
    return [f"compact: {metrics['numFilesRemoved']} files into {metrics['numFilesAdded']}; "
            f"vacuum deleted {len(vacuumed)} files; {len(data)} data files left"]


# Partition values that trip up path handling: URI escaping of add.path (a literal "%2F" must
# not be decoded twice), Hive escaping of folder names, "" (which Delta reads as NULL), NULL.
AWKWARD = ["a b", "x=y", "50%", "a/b", "a+b", "it's", "%2F", "é", "日本", "", None, "plain"]


def build_part_str(path):
    for v in range(3):
        t = with_column(batch(500 + v, 24, v * 100, edges=v == 0), "k", pa.string(),
                        AWKWARD[v:] + AWKWARD[:v], first=True)
        write_deltalake(path, t, mode="append", partition_by=["k"])
    adds = add_actions(path)
    sample = sorted({a["path"].split("/")[0] for a in adds})
    return [f"{len(adds)} files in {len(sample)} partitions; add.path folders: {' '.join(sample)}"]


def build_part_int_date(path):
    pis = [-1, 0, 7, 2**31 - 1, None]
    pds = [date(1969, 12, 31), date(2024, 2, 29), None, date(1, 1, 1)]
    for v in range(2):
        t = batch(600 + v, 30, v * 100, edges=v == 0)
        t = with_column(t, "pi", pa.int32(), pis, first=True)
        t = with_column(t, "pd", pa.date32(), pds[v:] + pds[:v])
        write_deltalake(path, t, mode="append", partition_by=["pi", "pd"])
    adds = add_actions(path)
    return [f"{len(adds)} files; e.g. {adds[0]['path'].rsplit('/', 1)[0]}"]


def build_schema_evolution(path):
    write_deltalake(path, batch(700, 20, 0, edges=True))
    t = batch(701, 20, 1000)
    t = with_column(t, "added_s", pa.string(), ["new", None, "ñeu"])
    t = with_column(t, "added_i64", pa.int64(), [BIG + 7, None, -3])
    write_deltalake(path, t, mode="append", schema_mode="merge")
    write_deltalake(path, batch(702, 20, 2000), mode="append", schema_mode="merge")
    names = DeltaTable(path).schema().to_arrow().names
    return [f"v{DeltaTable(path).version()}: columns {', '.join(names)}"]


def reference_reads(path):
    """Whether deltalake and DuckDB read a table Medallion must refuse (for the corpus notes)."""
    said = []
    try:
        said.append(f"deltalake reads {DeltaTable(path).to_pyarrow_table().num_rows} rows")
    except Exception as e:  # noqa: BLE001
        said.append(f"deltalake refuses ({one_line(str(e), 100)})")
    con = duckdb.connect(config={"allow_unsigned_extensions": "true"})
    load_duckdb_delta(con)
    try:
        n = con.execute(f"SELECT count(*) FROM delta_scan({sql_str(path)})").fetchall()[0][0]
        said.append(f"duckdb reads {n} rows")
    except duckdb.Error as e:
        said.append(f"duckdb refuses ({one_line(str(e), 100)})")
    return "; ".join(said)


def build_deletion_vectors(path):
    # Through alter.add_feature, not configuration={"delta.enableDeletionVectors": "true"}:
    # that also lists reader feature variantType, in an order that changes from run to run.
    write_deltalake(path, batch(800, 20, 0, edges=True))
    dt = DeltaTable(path)
    dt.alter.add_feature(TableFeatures.DeletionVectors, allow_protocol_versions_increase=True)
    dt = DeltaTable(path)
    dt.delete("i32 > 0")
    with_dv = sum(1 for f in log_files(path) if f.endswith(".json")
                  for line in open(os.path.join(path, "_delta_log", f))
                  if '"add"' in line and json.loads(line).get("add", {}).get("deletionVector"))
    p = dt.protocol()
    notes = [f"protocol reader v{p.min_reader_version} features {p.reader_features}; "
             f"{with_dv} add actions carry a deletion vector"
             + ("" if with_dv else " (deltalake rewrote the files instead of writing DVs)")]
    if not with_dv:
        # A table that only enables the feature is readable as it is; the case Medallion must
        # refuse is a file that has a deletion vector. deltalake does not write one, so the
        # next commit re-adds a live file with an inline deletion vector (the protocol's
        # descriptor: storage type "i", the bitmap z85-encoded inline), as Spark would.
        version = dt.version()
        live = None
        for f in sorted(log_files(path)):
            if f.endswith(".json"):
                for line in open(os.path.join(path, "_delta_log", f)):
                    action = json.loads(line)
                    if "add" in action:
                        live = action["add"]
                    elif "remove" in action and live and action["remove"]["path"] == live["path"]:
                        live = None
        assert live, "the deletion-vector table has no live file to mark"
        dv = {"storageType": "i", "pathOrInlineDv": "wi5b=000010000siXQKl0rr91000f55c8Xg0@@D72lkbi5=-{L",
              "sizeInBytes": 36, "cardinality": 1}
        now = int(time.time() * 1000)
        entry = [{"commitInfo": {"timestamp": now, "operation": "DELETE"}},
                 {"remove": {"path": live["path"], "deletionTimestamp": now, "dataChange": True,
                             "extendedFileMetadata": True, "partitionValues": {},
                             "size": live["size"]}},
                 {"add": {**live, "modificationTime": now, "dataChange": True,
                          "deletionVector": dv}}]
        with open(os.path.join(path, "_delta_log", f"{version + 1:020}.json"), "x") as out:
            out.write("".join(json.dumps(a) + "\n" for a in entry))
        notes.append(f"v{version + 1}: one live file re-added with an inline deletion vector (by hand)")
    return notes + [reference_reads(path)]


def build_column_mapping(path):
    write_deltalake(path, batch(900, 20, 0, edges=True),
                    configuration={"delta.columnMapping.mode": "name"})
    dt = DeltaTable(path)
    p = dt.protocol()
    field = json.loads(dt.schema().to_json())["fields"][0]
    return [f"protocol reader v{p.min_reader_version}; column `{field['name']}` is stored as "
            f"`{field['metadata'].get('delta.columnMapping.physicalName')}`", reference_reads(path)]


# ---------------------------------------------------------------------------------------------
# WHERE predicates: the same SQL for every engine (see Deltalake.filtered for deltalake)


class Filter:
    def __init__(self, name, sql):
        self.name, self.sql = name, sql


def sql_str(s):
    return "'" + s.replace("'", "''") + "'"


COMMON_FILTERS = [
    Filter("i64 = 2^53+1", "i64 = 9007199254740993"),
    Filter("i64 > 2^53", "i64 > 9007199254740992"),
    Filter("d18 >= 0.0001", "d18 >= CAST('0.0001' AS DECIMAL(18,4))"),
    Filter("d38 < -1e19-1e-10", "d38 < CAST('-10000000000000000000.0000000001' AS DECIMAL(38,10))"),
    Filter("dt in 1969..1970", "dt BETWEEN DATE '1969-06-01' AND DATE '1970-01-01'"),
    Filter("ts >= 2010-06-15T12:00:00.5Z", "ts >= CAST('2010-06-15T12:00:00.5Z' AS TIMESTAMP)"),
    Filter("s = '日本語' or b is null", "s = '日本語' OR b IS NULL"),
]

PART_STR_FILTERS = [
    Filter(f"k = {v!r}", f"k = {sql_str(v)}")
    for v in ["x=y", "50%", "a/b", "it's", "%2F", "日本"]
] + [Filter("k is null", "k IS NULL")]

PART_INT_DATE_FILTERS = [
    Filter("pi = -1", "pi = -1"),
    Filter("pi is null", "pi IS NULL"),
    Filter("pd = 2024-02-29", "pd = DATE '2024-02-29'"),
    Filter("pd < 1970 and pi > 0", "pd < DATE '1970-01-01' AND pi > 0"),
]

SCHEMA_EVOLUTION_FILTERS = [
    Filter("added_s is null", "added_s IS NULL"),
    Filter("added_i64 > 2^53", "added_i64 > 9007199254740992"),
]


class TableCase:
    """One table of the corpus: how to write it, and what Medallion must do with it."""

    def __init__(self, name, build, filters=(), refuse=None):
        self.name, self.build, self.filters = name, build, list(filters)
        self.refuse = refuse  # the feature the error must name, for tables Medallion refuses
        self.notes = []


def corpus_cases():
    return [
        TableCase("plain", build_plain, COMMON_FILTERS),
        TableCase("checkpointed", build_checkpointed, COMMON_FILTERS),
        TableCase("overwrite_delete", build_overwrite_delete, COMMON_FILTERS),
        TableCase("compacted", build_compacted, COMMON_FILTERS),
        TableCase("part_str", build_part_str, PART_STR_FILTERS + COMMON_FILTERS[:3]),
        TableCase("part_int_date", build_part_int_date,
                  PART_INT_DATE_FILTERS + COMMON_FILTERS[3:6]),
        TableCase("schema_evolution", build_schema_evolution,
                  SCHEMA_EVOLUTION_FILTERS + COMMON_FILTERS[:2]),
        TableCase("deletion_vectors", build_deletion_vectors, refuse="deletion vector"),
        TableCase("column_mapping", build_column_mapping, refuse="column mapping"),
    ]


SKIPPED = [("multi_part_checkpoint",
            "deltalake writes only single-file checkpoints (delta-io/delta-rs#288)")]


# ---------------------------------------------------------------------------------------------
# canonical values: one text per value, whichever engine produced it, typed by the column


def family(typ):
    if pa.types.is_integer(typ):
        return "int"
    if pa.types.is_floating(typ):
        return "float"
    if pa.types.is_decimal(typ):
        return "decimal"
    if pa.types.is_string(typ) or pa.types.is_large_string(typ):
        return "string"
    if pa.types.is_boolean(typ):
        return "bool"
    if pa.types.is_date(typ):
        return "date"
    if pa.types.is_timestamp(typ):
        return "timestamp"
    raise SystemExit(f"no canonical form for {typ}")


ISO_TS = re.compile(r"(\d{4,}-\d\d-\d\d)[T ](\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:?\d\d)?")


def canon(fam, v):
    """The canonical text of `v` in a column of family `fam`.

    Anything of an unexpected Python type comes out as `?type:repr`, so it shows up as a
    difference instead of being coerced into agreement. The normalisations, each exact:
    - Medallion's JSON (arrow-json) prints decimals as JSON numbers, parsed here with
      parse_float=Decimal so no digit is lost; decimals compare by value (Decimal equality), so
      "1.5000" and Decimal("1.5") agree but 1.5 and 1.5001 never do.
    - floats reach this function as float (deltalake, DuckDB) or as the Decimal/int of
      Medallion's JSON text; arrow-json prints the shortest text that round-trips, so
      float(text) is exactly the stored double. repr() then distinguishes -0.0 from 0.0.
    - dates come as datetime.date or as ISO text.
    - timestamps with a time zone come as aware datetimes or as ISO text with an offset (or Z);
      both are brought to UTC with microseconds. Text without an offset for this UTC column is
      kept distinct (`?naive:`): it would mean the time zone was lost. Text with non-zero
      digits beyond microseconds is kept distinct too (Delta timestamps are microseconds).
    """
    if v is None:
        return "∅"
    odd = f"?{type(v).__name__}:{v!r}"
    if fam == "int":
        return str(v) if isinstance(v, int) and not isinstance(v, bool) else odd
    if fam == "float":
        if isinstance(v, (float, Decimal)) or (isinstance(v, int) and not isinstance(v, bool)):
            return repr(float(v))
        return odd
    if fam == "decimal":
        if isinstance(v, str):
            try:
                v = Decimal(v)
            except decimal.InvalidOperation:
                return odd
        if isinstance(v, int) and not isinstance(v, bool):
            v = Decimal(v)
        if not isinstance(v, Decimal):
            return odd
        return "0" if v == 0 else format(v.normalize(), "f")
    if fam == "string":
        return v if isinstance(v, str) else odd
    if fam == "bool":
        return str(v).lower() if isinstance(v, bool) else odd
    if fam == "date":
        if isinstance(v, datetime):
            return odd
        if isinstance(v, date):
            return v.isoformat()
        if isinstance(v, str):
            try:
                return date.fromisoformat(v).isoformat()
            except ValueError:
                return odd
        return odd
    if fam == "timestamp":
        if isinstance(v, datetime):
            if v.tzinfo is None:
                return f"?naive:{v.isoformat()}"
            return v.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        if isinstance(v, str):
            m = ISO_TS.fullmatch(v)
            if not m:
                return odd
            day, clock, frac, offset = m.groups()
            frac = (frac or "").ljust(9, "0")
            if offset is None or frac[6:].strip("0"):
                return f"?naive:{v}" if offset is None else f"?ns:{v}"
            offset = "+00:00" if offset == "Z" else offset
            try:
                parsed = datetime.fromisoformat(f"{day}T{clock}.{frac[:6]}{offset}")
            except ValueError:
                return odd
            return canon(fam, parsed)
        return odd
    return odd


class Schema:
    """The reference column names and families (deltalake's Arrow schema)."""

    def __init__(self, arrow_schema):
        self.names = arrow_schema.names
        self.families = {fld.name: family(fld.type) for fld in arrow_schema}
        self.numeric = [n for n in self.names
                        if self.families[n] in ("int", "float", "decimal") and n not in NOT_SUMMED]


SEP = "\x1f"  # between a row's values: no value in the corpus contains it


class Rows:
    """A multiset of canonical rows: count, digest, and the rows to show a difference."""

    def __init__(self, schema, dict_rows, extra_keys=()):
        self.lines = Counter(
            SEP.join(canon(schema.families[c], r.get(c)) for c in schema.names) for r in dict_rows)
        self.count = sum(self.lines.values())
        text = "\n".join(sorted(self.lines.elements()))
        self.digest = hashlib.sha256(text.encode()).hexdigest()[:12]
        self.extra_keys = sorted(extra_keys)

    def key(self):
        return (self.count, self.digest, tuple(self.extra_keys))

    def describe(self):
        extra = f", unexpected columns {self.extra_keys}" if self.extra_keys else ""
        return f"{self.count} rows #{self.digest}{extra}"

    def differences(self, reference, limit=2):
        def shown(lines):
            # Sorted, so a changed row's old and new forms (same id first) appear side by side.
            return [line.replace(SEP, " | ") for line in sorted(lines.elements())[:limit]]

        missing = shown(reference.lines - self.lines)
        unexpected = shown(self.lines - reference.lines)
        parts = [f"missing {missing}" if missing else "",
                 f"unexpected {unexpected}" if unexpected else ""]
        return "; ".join(p for p in parts if p)


# ---------------------------------------------------------------------------------------------
# the engines: each answers count_and_sums(), rows() and filtered(Filter), or raises Failed


class Failed(Exception):
    """An engine could not answer; the message is its error in one line."""


def sums_sql(schema, table):
    cols = ", ".join(f'sum("{c}") AS "sum_{c}"' for c in schema.numeric)
    return f"SELECT count(*) AS n{', ' + cols if cols else ''} FROM {table}"


class Deltalake:
    name = "deltalake"

    def __init__(self, path, con):
        self.dt, self.con = DeltaTable(path), con
        self.table = self.dt.to_pyarrow_table()
        self.schema = Schema(self.table.schema)

    def count_and_sums(self):
        rows = self.table.to_pylist()
        out = {"n": len(rows)}
        for c in self.schema.numeric:
            values = [r[c] for r in rows if r[c] is not None]
            out[c] = sum(values) if values else None
        return out

    def rows(self):
        return Rows(self.schema, self.table.to_pylist())

    def filtered(self, flt):
        # deltalake's rows, filtered by DuckDB's SQL over Arrow. Neither of deltalake 1.6.6's own
        # filtered reads can be the reference: to_pyarrow_dataset().to_table(filter=...) turns
        # file statistics into pyarrow guarantees that drop matching rows (decimal ranges, IS
        # NULL on a column older files lack), and QueryBuilder returns '' for an empty-string
        # partition value, which PROTOCOL.md ("Partition Value Serialization") says is NULL and
        # which to_pyarrow_table() and DuckDB read as NULL.
        self.con.register("deltalake_rows", self.table)
        try:
            result = self.con.execute(f"SELECT * FROM deltalake_rows WHERE {flt.sql}")
            return Rows(self.schema, result.to_arrow_table().to_pylist())
        except duckdb.Error as e:
            raise Failed(one_line(str(e))) from e
        finally:
            self.con.unregister("deltalake_rows")


def load_duckdb_delta(con):
    """DuckDB cannot download extensions here: load the wheel's extension file by path."""
    import duckdb_extension_delta  # noqa: F401  (the wheel ships the binary next to its module)

    base = os.path.dirname(duckdb_extension_delta.__file__)
    found = glob.glob(os.path.join(base, "**", "*.duckdb_extension"), recursive=True)
    if not found:
        raise SystemExit(f"no delta.duckdb_extension inside {base}")
    con.execute(f"LOAD '{found[0]}'")


class DuckDB:
    name = "duckdb"

    def __init__(self, con, path, schema):
        self.con, self.schema = con, schema
        self.scan = f"delta_scan({sql_str(path)})"

    def arrow_rows(self, sql):
        # Through Arrow: DuckDB's own Python conversion of time zones would need pytz.
        try:
            result = self.con.execute(sql)
            table = result.to_arrow_table()
        except duckdb.Error as e:
            raise Failed(one_line(str(e))) from e
        extra = set(table.schema.names) - set(self.schema.names)
        return Rows(self.schema, table.to_pylist(), extra)

    def count_and_sums(self):
        # fetchall, not Arrow: sum(BIGINT) is a HUGEINT, which Python gets as an exact int.
        try:
            cur = self.con.execute(sums_sql(self.schema, self.scan))
            names = [d[0] for d in cur.description]
            row = cur.fetchall()[0]
        except duckdb.Error as e:
            raise Failed(one_line(str(e))) from e
        got = dict(zip(names, row))
        return {"n": got["n"], **{c: got[f"sum_{c}"] for c in self.schema.numeric}}

    def rows(self):
        return self.arrow_rows(f"SELECT * FROM {self.scan}")

    def filtered(self, flt):
        return self.arrow_rows(f"SELECT * FROM {self.scan} WHERE {flt.sql}")


class MedallionRun:
    """One `medallion query` on table `t` at `loc`; `.json` holds the parsed rows on success."""

    def __init__(self, binary, loc, sql):
        self.loc = loc
        argv = [binary, "query", sql, "--table", f"t={loc}", "--format", "json",
                "--engine", "native"]
        try:
            done = subprocess.run(argv, capture_output=True, text=True, errors="replace",
                                  timeout=TIMEOUT_SECONDS)
            self.rc, self.stdout, self.stderr = done.returncode, done.stdout, done.stderr
        except subprocess.TimeoutExpired:
            self.rc, self.stdout, self.stderr = None, "", f"no exit after {TIMEOUT_SECONDS} s"
        self.json = None
        if self.rc == 0:
            try:
                # Decimals and floats as Decimal: the exact digits Medallion printed.
                self.json = json.loads(self.stdout, parse_float=Decimal)
            except ValueError as e:
                self.error = f"output is not JSON ({e}): {self.stdout[:120]!r}"
                return
        self.error = None if self.json is not None else self.said()

    def said(self):
        """The error in one line: its first line and, if there is more, the last cause."""
        if self.rc is None:
            return f"hang: {self.stderr}"
        text = self.stderr.split("stack backtrace:")[0].replace(self.loc, "LOC")
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        panic = any(m in self.stderr for m in PANIC_MARKERS)
        prefix = "PANIC " if panic else ""
        if not lines:
            return f"{prefix}exit {self.rc}, nothing on stderr"
        return prefix + (lines[0] if len(lines) == 1 else f"{lines[0]} … {lines[-1]}")


class Medallion:
    name = "medallion"

    def __init__(self, binary, loc, schema, pool):
        self.binary, self.loc, self.schema, self.pool = binary, loc, schema, pool

    def start(self, sql):
        """Starts a query in the pool; its result is read later, so queries run in parallel."""
        return self.pool.submit(MedallionRun, self.binary, self.loc, sql)

    def rows_of(self, future):
        run = future.result()
        if run.error:
            raise Failed(run.error)
        # arrow-json leaves null values out of an object, so a missing key reads as NULL. (A
        # column Medallion dropped altogether shows up as NULLs in the digest.)
        extra = set().union(*(r.keys() for r in run.json)) - set(self.schema.names)
        return Rows(self.schema, run.json, extra)

    def sums_of(self, future):
        run = future.result()
        if run.error:
            raise Failed(run.error)
        if len(run.json) != 1:
            raise Failed(f"expected one row, got {run.stdout[:120]!r}")
        got = run.json[0]
        # arrow-json leaves null values out of an object: a missing sum is NULL.
        return {"n": got.get("n"), **{c: got.get(f"sum_{c}") for c in self.schema.numeric}}


def one_line(text, limit=300):
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "…"


# ---------------------------------------------------------------------------------------------
# checks: each compares what deltalake, DuckDB and Medallion answered; returns (ok, detail)


def answer(get):
    """What an engine answered, or the Failed it raised."""
    try:
        return get()
    except Failed as e:
        return e


def compare(answers, key, describe, differences=None):
    """answers: [(engine name, value or Failed)], deltalake first (the reference)."""
    ref_name, ref = answers[0]
    failed = [(n, a) for n, a in answers if isinstance(a, Failed)]
    if failed:
        return False, "; ".join(f"{n} error: {a}" for n, a in failed)
    if all(key(a) == key(ref) for _, a in answers):
        return True, describe(ref)
    parts = []
    for n, a in answers[1:]:
        if key(a) != key(ref):
            diff = differences(a, ref) if differences else ""
            parts.append(f"{n}: {describe(a)}{' — ' + diff if diff else ''}")
    return False, f"{ref_name}: {describe(ref)}; " + "; ".join(parts)


def check_count(answers):
    return compare(answers, key=lambda a: canon("int", a["n"]), describe=lambda a: f"{a['n']} rows")


def check_sums(schema, answers):
    def key(a):
        return tuple(canon(schema.families[c], a[c]) for c in schema.numeric)

    def describe(a):
        return ", ".join(f"{c}={canon(schema.families[c], a[c])}" for c in schema.numeric)

    ok, detail = compare(answers, key, describe)
    if ok:
        return True, f"{len(schema.numeric)} columns ({', '.join(schema.numeric)})"
    return ok, detail


def check_rows(answers):
    return compare(answers, key=Rows.key, describe=Rows.describe,
                   differences=lambda a, ref: a.differences(ref))


def refusal(run, feature):
    """(ok, detail) for a table Medallion must refuse with an error naming `feature`.

    The feature may be named in words ("deletion vector") or as the protocol spells it
    ("deletionVectors"): letters are compared without case, spaces or underscores.
    """
    if run.rc == 0:
        return False, (f"exit 0, read {len(run.json or [])} rows "
                       f"(expected an error naming {feature!r})")
    said = run.said()
    if said.startswith(("PANIC", "hang")):
        return False, said
    squash = lambda s: re.sub(r"[^a-z]", "", s.lower())  # noqa: E731
    if squash(feature) not in squash(run.stderr.replace(run.loc, "")):
        return False, f"error does not name {feature!r}: {said}"
    return True, said


# ---------------------------------------------------------------------------------------------
# running it all


class Report:
    def __init__(self):
        self.results = []  # (table, source, check, ok, detail)

    def line(self, table, source, check, ok, detail):
        status = "ok" if ok is True else ("skip" if ok is None else "FAIL")
        self.results.append((table, source, check, status, detail))
        print(f"{status:<4} {table:<17} {source:<4} {check:<30} {detail}", flush=True)

    def summary(self, sources, seconds):
        """The ok/total per table and source, then each distinct failure once; True if no FAIL."""
        print("\nsummary: checks ok per table and source, then each distinct failure with its count")
        tables = list(dict.fromkeys(r[0] for r in self.results))
        print(f"  {'table':<22}" + "".join(f"{s:<8}" for s in sources))
        for t in tables:
            rows = [r for r in self.results if r[0] == t]
            cells = []
            for s in sources:
                mine = [r for r in rows if r[1] == s]
                ok = sum(r[3] == "ok" for r in mine)
                cells.append(f"{ok}/{len(mine)}" if mine else "-")
            print(f"  {t:<22}" + "".join(f"{c:<8}" for c in cells))
            reasons = Counter((r[1], r[4]) for r in rows if r[3] in ("FAIL", "skip"))
            for (source, detail), n in list(reasons.items())[:4]:
                label = "skipped" if source == "-" else f"{source} ×{n}"
                print(f"      {label}: {one_line(detail, 200)}")
            if len(reasons) > 4:
                print(f"      … and {len(reasons) - 4} other failures above")
        counts = Counter(r[3] for r in self.results)
        print(f"delta corpus: {counts['ok']} ok, {counts['FAIL']} FAIL, {counts['skip']} skipped "
              f"in {seconds:.0f} s")
        return counts["FAIL"] == 0


def served(root):
    """A rangeserve.py on `root`; returns (process, base URL)."""
    proc = subprocess.Popen([sys.executable, str(RANGESERVE), str(root), "--port", "0"],
                            stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline().strip()
    if not line.startswith("listening on "):
        proc.kill()
        sys.exit(f"rangeserve.py did not start: {line!r}")
    return proc, line.removeprefix("listening on ")


def check_readable(report, case, path, locations, con, binary, pool):
    """Every check of one readable table, for each source in `locations`."""
    try:
        ref = Deltalake(path, con)
    except Exception as e:  # noqa: BLE001  (a reference that cannot read is a corpus problem)
        for source in locations:
            report.line(case.name, source, "deltalake reads", False, one_line(str(e)))
        return
    duck = DuckDB(con, path, ref.schema)
    reference = {
        "count_and_sums": [(e.name, answer(e.count_and_sums)) for e in (ref, duck)],
        "rows": [(e.name, answer(e.rows)) for e in (ref, duck)],
        "filters": [[(e.name, answer(lambda e=e: e.filtered(flt))) for e in (ref, duck)]
                    for flt in case.filters],
    }
    started = {}
    for source, loc in locations.items():
        med = Medallion(binary, loc, ref.schema, pool)
        started[source] = (med, med.start(sums_sql(ref.schema, "t")), med.start("SELECT * FROM t"),
                           [med.start(f"SELECT * FROM t WHERE {flt.sql}") for flt in case.filters])
    for source, (med, sums, rows, filtered) in started.items():
        cs = reference["count_and_sums"] + [("medallion", answer(lambda: med.sums_of(sums)))]
        report.line(case.name, source, "count", *check_count(cs))
        report.line(case.name, source, "sums", *check_sums(ref.schema, cs))
        rs = reference["rows"] + [("medallion", answer(lambda: med.rows_of(rows)))]
        report.line(case.name, source, "rows", *check_rows(rs))
        for flt, refs, fut in zip(case.filters, reference["filters"], filtered):
            fs = refs + [("medallion", answer(lambda fut=fut: med.rows_of(fut)))]
            report.line(case.name, source, f"where {flt.name}", *check_rows(fs))


def check_refused(report, case, locations, binary, pool):
    runs = {source: pool.submit(MedallionRun, binary, loc, "SELECT count(*) AS n FROM t")
            for source, loc in locations.items()}
    for source, fut in runs.items():
        report.line(case.name, source, f"refuses, naming {case.refuse}",
                    *refusal(fut.result(), case.refuse))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("binary", help="the medallion executable")
    ap.add_argument("--corpus", type=Path,
                    help="write the corpus here and keep it (default: a temporary folder)")
    ap.add_argument("--tables", help="comma-separated table names (default: all)")
    ap.add_argument("--sources", default="disk,http", help="disk, http or both (default)")
    args = ap.parse_args()
    binary = os.path.abspath(args.binary)
    if not os.access(binary, os.X_OK):
        sys.exit(f"{binary} is not an executable")
    sources = [s for s in args.sources.split(",") if s]
    if set(sources) - {"disk", "http"}:
        ap.error("--sources takes disk and/or http")
    cases = corpus_cases()
    if args.tables:
        wanted = set(args.tables.split(","))
        unknown = wanted - {c.name for c in cases}
        if unknown:
            ap.error(f"unknown tables {sorted(unknown)}; known: {', '.join(c.name for c in cases)}")
        cases = [c for c in cases if c.name in wanted]

    start = time.monotonic()
    if args.corpus:
        root = args.corpus.resolve()
        if root.exists():
            shutil.rmtree(root)
        root.mkdir(parents=True)
    else:
        root = Path(tempfile.mkdtemp(prefix="delta-corpus-"))
    print(f"corpus in {root} (deltalake {deltalake.__version__}, duckdb {duckdb.__version__})")
    for case in cases:
        case.notes = case.build(str(root / case.name))
        print(f"  {case.name:<17} {'; '.join(case.notes)}")
    for name, reason in SKIPPED:
        print(f"  {name:<17} not built: {reason}")
    print(f"corpus written in {time.monotonic() - start:.0f} s\n", flush=True)

    con = duckdb.connect(config={"allow_unsigned_extensions": "true"})
    load_duckdb_delta(con)
    con.execute("SET TimeZone = 'UTC'")
    server = None
    report = Report()
    try:
        base = None
        if "http" in sources:
            server, base = served(root)
        workers = min(8, os.cpu_count() or 2)
        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            for case in cases:
                path = str(root / case.name)
                locations = {s: (path if s == "disk" else f"{base}/{case.name}") for s in sources}
                if case.refuse:
                    check_refused(report, case, locations, binary, pool)
                else:
                    check_readable(report, case, path, locations, con, binary, pool)
        for name, reason in SKIPPED:
            report.line(name, "-", "built", None, reason)
    finally:
        if server:
            server.kill()
            server.wait()
        if not args.corpus:
            shutil.rmtree(root, ignore_errors=True)
    return 0 if report.summary(sources, time.monotonic() - start) else 1


if __name__ == "__main__":
    sys.exit(main())
