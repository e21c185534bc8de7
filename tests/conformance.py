"""Medallion against apache/parquet-testing: every file read right, every bad file refused cleanly.

Usage:
  python3 tests/conformance.py MEDALLION_BIN PARQUET_TESTING_DIR [--http]
                               [--known-failures FILE] [--json OUT]

parquet-testing is the corpus other Parquet implementations test against: every encoding,
compression codec, page layout and logical type writers have produced, plus files that
crashed readers. Running Medallion over all of it finds unsupported features, wrong values
and, worse, panics, hangs and runaway allocations on hostile input, before users do.

For each file this runs `medallion inspect LOC --json` and `medallion query` with
`SELECT count(*)` and `SELECT * ... --format json` (LOC is the local path or, with --http, a
URL on a rangeserve.py this script starts on the corpus), and checks:
  data/*.parquet       num_rows from inspect and count(*) equal the rows pyarrow reads (the sum
                       of the row groups' counts, which is what pyarrow and DuckDB read even
                       when the footer's own count disagrees), and the decoded values of SELECT *
                       equal pyarrow.parquet.read_table's: both are put in one canonical form
                       (below), hashed, and the hashes compared. If pyarrow cannot read the
                       file there is nothing to compare: Medallion may read it (arrow-rs reads
                       some such files on purpose) or refuse it with a short error.
  *.encrypted, files under an encrypt*/aes* folder
                       every command exits non-zero and says "encrypt" on stderr (Medallion
                       does not decrypt Parquet).
  bad_data/*.parquet   SELECT * exits non-zero with a short error on stderr; inspect, which
                       reads only the footer, may succeed but must not panic or hang.
Everywhere: no panic, no hang (60 s), and each command runs under a 4 GB address-space limit
so a file that makes Medallion allocate without bound fails instead of taking the machine.

The canonical form of a table is its rows in file order, each a list of column values, written
as compact JSON and hashed with SHA-256. Values are made comparable across the two renderings
(Medallion's is arrow-json's, the CLI's `--format json`), always by the column's type in
pyarrow's schema, never by loosening a comparison:
  null          a JSON null or a missing key (arrow-json leaves null fields out of objects).
  integers      exact Python ints, any width (uint64 and int64 print exactly in JSON).
  floats        the value rounded to the column's width (float16 and float32 through a
                32-bit float; arrow-json prints their shortest round-trip decimal) and written
                with float.hex(), so -0.0 differs from 0.0 and nothing is compared in decimal.
  NaN, ±inf     arrow-json writes every non-finite float as null, so in SELECT * they count as
                null on both sides. To still tell NaN from null, each top-level float column in
                which pyarrow finds a non-finite value is compared a second time through
                `CAST(col AS VARCHAR)` ("NaN", "inf", "-inf" or the number). No file of the
                corpus has non-finite floats inside a list, map or struct.
  decimals      the exact decimal text with the column's scale (JSON numbers are parsed as
                Python Decimals, never as floats).
  binary        lowercase hex (arrow-json's rendering of Binary and FixedSizeBinary).
  timestamps    [nanoseconds since the epoch, "tz" or "naive"]: arrow-json prints an ISO
                8601 text (with an offset when the type has a time zone) at any unit;
                pyarrow's raw integers are scaled by the unit. Dates and times of day are
                nanoseconds since the epoch and since midnight.
  lists         lists of canonical elements; structs, a list of their fields' values in
                schema order (looked up by name in Medallion's JSON objects).
  maps          a list of [key, value] pairs in stored order. arrow-json writes a map as a
                JSON object: it leaves out the entries whose value is null (so pyarrow's are
                left out too) and refuses maps with non-string keys (so columns holding one
                are left out of the JSON query, which is then SELECT of the other columns).
                Every column holding a map is therefore compared a second time as the CLI's
                CSV writes it, arrow's display text ({k: v, ...}, [a, b], {field: v}, null as
                nothing), against pyarrow's values rendered the same way: that sees the null
                values and the non-string keys.
Rows are compared in file order, so the queries that read values run on one partition
(`--partitions 1`, as browsers run); count(*) runs with the default partitions.
Files whose decoded size (the row groups' total_byte_size) exceeds 256 MiB are not
content-compared (their rows are still counted); the line says so.

Files listed in --known-failures (paths relative to the corpus, one a line, `# reason`) are
reported `known` when they fail and `fixed` when they pass; neither fails the run.
"""

import argparse
import contextlib
import csv
import hashlib
import io
import json
import math
import re
import signal
import struct
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path
from urllib.parse import quote, unquote

import pyarrow as pa
import pyarrow.parquet as pq

TIMEOUT_SECONDS = 60
ADDRESS_SPACE_LIMIT = 4_000_000_000
PANIC_MARKERS = ("panicked", "RUST_BACKTRACE")
# "One-line-ish": a message and its chain of causes, not a dump of a Thrift struct or a page.
MAX_ERROR_LINES = 10
MAX_ERROR_CHARS = 2000
KEPT_OUTPUT_CHARS = 4000
# Above this decoded size SELECT * is run but its output is not compared (nor kept).
CONTENT_LIMIT_BYTES = 256 * 1024 * 1024
RANGESERVE = Path(__file__).with_name("rangeserve.py")

COUNT_SQL = "SELECT count(*) AS n FROM t"
SELECT_SQL = "SELECT * FROM t"


# finding the files and what to expect of them


def is_parquet(path):
    return path.is_file() and path.name.endswith((".parquet", ".parquet.encrypted"))


def is_encrypted(rel):
    folders = [part.lower() for part in rel.parts[:-1]]
    return ".encrypted" in rel.name or any(f.startswith(("encrypt", "aes")) for f in folders)


def discover(corpus):
    """(relative path, kind) for every Parquet file of the corpus, in a stable order."""
    cases = []
    for top in ("data", "bad_data"):
        for path in sorted((corpus / top).rglob("*")):
            if not is_parquet(path):
                continue
            rel = path.relative_to(corpus)
            kind = "bad" if top == "bad_data" else "encrypted" if is_encrypted(rel) else "data"
            cases.append((rel, kind))
    return cases


class Reference:
    """What pyarrow reads from one file: its rows, schema and (on demand) canonical content."""

    def __init__(self, path):
        self.path = path
        self.rows = self.footer_rows = self.schema = self.error = None
        self.decoded_bytes = 0
        self._table = None
        try:
            meta = pq.ParquetFile(path).metadata
            self.schema = pq.read_schema(path)
        except Exception as e:  # whatever pyarrow raises, it cannot read the file
            self.error = f"{type(e).__name__}: {e}"
            return
        groups = [meta.row_group(i) for i in range(meta.num_row_groups)]
        # pyarrow (and DuckDB) read a file by its row groups; the footer's own count is not
        # what they return when the two disagree.
        self.rows = sum(g.num_rows for g in groups)
        self.footer_rows = meta.num_rows
        self.decoded_bytes = sum(g.total_byte_size for g in groups)

    def comparable(self):
        return self.error is None and self.decoded_bytes <= CONTENT_LIMIT_BYTES

    def table(self):
        """The whole table (raises what pyarrow raises if it can read the footer only)."""
        if self._table is None:
            self._table = pq.read_table(self.path)
        return self._table


def load_known(path):
    """Relative paths listed in a known-failures file, mapped to their `# reason`."""
    known = {}
    if path is None:
        return known
    for line in Path(path).read_text().splitlines():
        name, _, reason = line.partition("#")
        if name.strip():
            known[name.strip()] = reason.strip()
    return known


# the canonical form of decoded values (see the module doc)

NS = {"s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}
NS_PER_DAY = 86_400 * 10**9


def unwrap(t):
    return t.value_type if pa.types.is_dictionary(t) else t


def is_binary(t):
    return (pa.types.is_binary(t) or pa.types.is_large_binary(t)
            or pa.types.is_fixed_size_binary(t) or pa.types.is_binary_view(t))


def is_string(t):
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def is_list(t):
    return (pa.types.is_list(t) or pa.types.is_large_list(t)
            or pa.types.is_fixed_size_list(t))


def float_key(x, t):
    """A finite float as the exact hex of its value at the column's width."""
    x = float(x)
    if t.bit_width < 64:
        x = struct.unpack("<f", struct.pack("<f", x))[0]
    return x.hex()


def nonfinite_key(x):
    """None if `x` is finite, else the name both sides agree on."""
    if math.isnan(x):
        return "NaN"
    return None if math.isfinite(x) else ("inf" if x > 0 else "-inf")


def canon_arrow(arr):
    """Canonical values of a pyarrow Array, one per slot."""
    t = arr.type
    if pa.types.is_dictionary(t):
        return canon_arrow(arr.dictionary_decode())
    n = len(arr)
    if pa.types.is_null(t):
        return [None] * n
    valid = arr.is_valid().to_pylist()
    if pa.types.is_integer(t) or pa.types.is_boolean(t) or is_string(t):
        values = arr.to_pylist()
    elif pa.types.is_floating(t):
        # Non-finite: null in arrow-json's rendering; checked apart (see nonfinite_columns).
        values = [None if v is None or not math.isfinite(v) else float_key(v, t)
                  for v in arr.to_pylist()]
    elif pa.types.is_decimal(t):
        values = [None if v is None else format(v, "f") for v in arr.to_pylist()]
    elif is_binary(t):
        values = [None if v is None else v.hex() for v in arr.to_pylist()]
    elif pa.types.is_timestamp(t):
        kind = "naive" if t.tz is None else "tz"
        values = [None if v is None else [v * NS[t.unit], kind]
                  for v in arr.cast(pa.int64()).to_pylist()]
    elif pa.types.is_date32(t):
        values = [None if v is None else v * NS_PER_DAY for v in arr.cast(pa.int32()).to_pylist()]
    elif pa.types.is_date64(t):
        values = [None if v is None else v * NS["ms"] for v in arr.cast(pa.int64()).to_pylist()]
    elif pa.types.is_time(t):
        ints = arr.cast(pa.int32() if pa.types.is_time32(t) else pa.int64()).to_pylist()
        values = [None if v is None else v * NS[t.unit] for v in ints]
    elif pa.types.is_fixed_size_list(t):
        child, size = canon_arrow(arr.values), t.list_size
        values = [child[(arr.offset + i) * size:(arr.offset + i + 1) * size] for i in range(n)]
    elif is_list(t) or pa.types.is_map(t):
        # `values` ignores the array's slicing; `offsets` index into it and honour it.
        offsets = arr.offsets.to_pylist()
        if pa.types.is_map(t):
            entries = arr.values
            keys, items = canon_arrow(entries.field(0)), canon_arrow(entries.field(1))
            # arrow-json leaves out the entries whose value is null (the display check sees them).
            child = [[k, v] if ok else None
                     for k, v, ok in zip(keys, items, entries.field(1).is_valid().to_pylist())]
        else:
            child = canon_arrow(arr.values)
        values = [child[offsets[i]:offsets[i + 1]] for i in range(n)]
        if pa.types.is_map(t):
            values = [[e for e in v if e is not None] for v in values]
    elif pa.types.is_struct(t):
        fields = [canon_arrow(arr.field(j)) for j in range(t.num_fields)]
        values = [[f[i] for f in fields] for i in range(n)]
    else:
        raise Uncomparable(t)
    return [v if ok else None for v, ok in zip(values, valid)]


class Uncomparable(Exception):
    """A type this script has no canonical form for (none occurs in the corpus today)."""

    def __init__(self, t):
        super().__init__(f"no canonical form for type {t}")


class Obj(list):
    """A JSON object as its (key, value) pairs, in order and with duplicates kept."""

    def get(self, key):
        return next((v for k, v in self if k == key), None)


def parse_medallion_json(text):
    return json.loads(text, object_pairs_hook=Obj, parse_float=Decimal)


TEMPORAL = re.compile(r"(?P<date>[+-]?\d{4,})-(?P<month>\d\d)-(?P<day>\d\d)"
                      r"(?:T(?P<time>\d\d:\d\d:\d\d(?:\.\d{1,9})?))?"
                      r"(?P<offset>Z|[+-]\d\d:\d\d(?::\d\d)?)?")
TIME = re.compile(r"(\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?")


def days_from_civil(y, m, d):
    """Days since 1970-01-01 of a proleptic Gregorian date, any year (H. Hinnant's algorithm)."""
    y -= m <= 2
    era = (y if y >= 0 else y - 399) // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def time_ns(text):
    m = TIME.fullmatch(text)
    if not m:
        return None
    h, mi, s, frac = m.groups()
    return ((int(h) * 60 + int(mi)) * 60 + int(s)) * 10**9 + int((frac or "").ljust(9, "0"))


def temporal_ns(text):
    """(nanoseconds since the epoch in UTC, whether an offset was given), or None."""
    m = TEMPORAL.fullmatch(text)
    if not m:
        return None
    days = days_from_civil(int(m["date"]), int(m["month"]), int(m["day"]))
    ns = days * NS_PER_DAY + (time_ns(m["time"]) if m["time"] else 0)
    offset = m["offset"]
    if offset and offset != "Z":
        sign = -1 if offset[0] == "-" else 1
        parts = [int(p) for p in offset[1:].split(":")] + [0]
        ns -= sign * ((parts[0] * 60 + parts[1]) * 60 + parts[2]) * 10**9
    return ns, offset is not None


def canon_json(v, t):
    """The canonical form of a value of type `t` as arrow-json rendered it.

    A value of an unexpected JSON shape becomes "unexpected: ..." so that it differs.
    """
    t = unwrap(t)
    if v is None or pa.types.is_null(t):
        return None
    bad = f"unexpected: {v!r}"[:200]
    if pa.types.is_boolean(t):
        return v if isinstance(v, bool) else bad
    if pa.types.is_integer(t):
        return v if isinstance(v, int) and not isinstance(v, bool) else bad
    if pa.types.is_floating(t):
        ok = isinstance(v, (int, Decimal)) and not isinstance(v, bool)
        return float_key(v, t) if ok else bad
    if pa.types.is_decimal(t):
        ok = isinstance(v, (int, Decimal)) and not isinstance(v, bool)
        return format(Decimal(v), "f") if ok else bad
    if is_string(t):
        return v if isinstance(v, str) else bad
    if is_binary(t):
        return v if isinstance(v, str) and re.fullmatch(r"(?:[0-9a-f]{2})*", v) else bad
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        parsed = temporal_ns(v) if isinstance(v, str) else None
        if parsed is None:
            return bad
        ns, has_offset = parsed
        if pa.types.is_timestamp(t):
            return [ns, "tz" if has_offset else "naive"]
        return ns if not has_offset else bad
    if pa.types.is_time(t):
        ns = time_ns(v) if isinstance(v, str) else None
        return bad if ns is None else ns
    if is_list(t):
        if not isinstance(v, list) or isinstance(v, Obj):
            return bad
        return [canon_json(e, t.value_type) for e in v]
    if pa.types.is_struct(t):
        if not isinstance(v, Obj):
            return bad
        return [canon_json(v.get(t.field(j).name), t.field(j).type) for j in range(t.num_fields)]
    if pa.types.is_map(t):
        # A JSON object: string keys (see json_fields), entries with a null value left out.
        if not isinstance(v, Obj):
            return bad
        return [[canon_json(k, t.key_type), canon_json(e, t.item_type)] for k, e in v]
    raise Uncomparable(t)


def canonical_text(rows):
    return json.dumps(rows, separators=(",", ":"), ensure_ascii=False)


def digest(rows):
    return hashlib.sha256(canonical_text(rows).encode()).hexdigest()


def reference_rows(table, fields):
    columns = [[v for chunk in table.column(f.name).chunks for v in canon_arrow(chunk)]
               for f in fields]
    return [list(row) for row in zip(*columns)] if columns else []


def medallion_rows(parsed, fields):
    """Canonical rows of Medallion's JSON, column by column as `fields` of pyarrow's schema."""
    if not isinstance(parsed, list) or isinstance(parsed, Obj):
        raise ValueError(f"expected a JSON array of rows, got {type(parsed).__name__}")
    return [[canon_json(row.get(f.name), f.type) if isinstance(row, Obj) else f"unexpected: {row!r}"
             for f in fields] for row in parsed]


def first_difference(mine, theirs, schema):
    """Where two canonical tables first differ, in words."""
    if len(mine) != len(theirs):
        return f"{len(mine)} rows, pyarrow {len(theirs)}"
    for i, (a, b) in enumerate(zip(mine, theirs)):
        for f, x, y in zip(schema, a, b):
            if x != y:
                return (f"row {i} column {f.name!r} ({f.type}): "
                        f"{canonical_text(x)[:120]} (pyarrow {canonical_text(y)[:120]})")
    return None


# what arrow-json cannot render: maps, checked through their display text (see the module doc)


def ident(name):
    return '"' + name.replace('"', '""') + '"'


def maps_in(t):
    """The map types inside type `t` (itself included)."""
    t = unwrap(t)
    if pa.types.is_map(t):
        return [t] + maps_in(t.key_type) + maps_in(t.item_type)
    if is_list(t):
        return maps_in(t.value_type)
    if pa.types.is_struct(t):
        return [m for j in range(t.num_fields) for m in maps_in(t.field(j).type)]
    return []


def json_renders(t):
    """Whether arrow-json can write a value of type `t`: map keys must be strings."""
    return all(is_string(unwrap(m.key_type)) for m in maps_in(t))


def json_fields(schema):
    """The columns arrow-json can write (all of them if it can write none: let it say why)."""
    kept = [f for f in schema if json_renders(f.type)]
    return kept or list(schema)


def select_sql(schema):
    """SELECT * FROM t, less the columns arrow-json cannot write (see the module doc)."""
    if schema is None or len(json_fields(schema)) == len(schema):
        return SELECT_SQL
    return f"SELECT {', '.join(ident(f.name) for f in json_fields(schema))} FROM t"


def map_columns(schema):
    return [f for f in schema if maps_in(f.type)] if schema is not None else []


def ryu(x, bits):
    """A float as arrow's display writes it (the ryu crate's format: shortest round-trip
    digits, plain notation for decimal exponents -5..16 (-6..13 for 32 bits), else d.ddde±x)."""
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    sign = "-" if math.copysign(1.0, x) < 0 else ""
    if x == 0:
        return sign + "0.0"
    if bits == 64:
        digits, exp = Decimal(repr(abs(x))).normalize().as_tuple()[1:]
    else:
        for p in range(1, 10):
            text = f"{abs(x):.{p - 1}e}"
            if struct.unpack("<f", struct.pack("<f", float(text)))[0] == abs(x):
                break
        digits, exp = Decimal(text).normalize().as_tuple()[1:]
    digits = "".join(map(str, digits))
    length, k = len(digits), exp
    kk = length + k
    top, low = (16, -5) if bits == 64 else (13, -6)
    if 0 <= k and kk <= top:
        out = digits + "0" * k + ".0"
    elif 0 < kk <= top:
        out = digits[:kk] + "." + digits[kk:]
    elif low < kk <= 0:
        out = "0." + "0" * -kk + digits
    else:
        mantissa = digits if length == 1 else digits[0] + "." + digits[1:]
        out = f"{mantissa}e{kk - 1}"
    return sign + out


def display_arrow(arr, top=True):
    """Each value of a pyarrow Array as the CLI's CSV writes a nested column: arrow's display
    text, with null as nothing (and, at top level, as an empty field)."""
    t = arr.type
    if pa.types.is_dictionary(t):
        return display_arrow(arr.dictionary_decode(), top)
    n = len(arr)
    null = None if top else ""
    if pa.types.is_null(t):
        return [null] * n
    if pa.types.is_boolean(t):
        values = ["true" if v else "false" for v in arr.to_pylist()]
    elif pa.types.is_integer(t) or is_string(t):
        values = [str(v) for v in arr.to_pylist()]
    elif pa.types.is_float32(t) or pa.types.is_float64(t):
        values = [None if v is None else ryu(v, t.bit_width) for v in arr.to_pylist()]
    elif pa.types.is_decimal(t):
        values = [None if v is None else format(v, "f") for v in arr.to_pylist()]
    elif is_binary(t):
        values = [None if v is None else v.hex() for v in arr.to_pylist()]
    elif is_list(t) and not pa.types.is_fixed_size_list(t):
        offsets, child = arr.offsets.to_pylist(), display_arrow(arr.values, False)
        values = ["[" + ", ".join(child[offsets[i]:offsets[i + 1]]) + "]" for i in range(n)]
    elif pa.types.is_map(t):
        offsets = arr.offsets.to_pylist()
        keys = display_arrow(arr.values.field(0), False)
        items = display_arrow(arr.values.field(1), False)
        values = ["{" + ", ".join(f"{keys[j]}: {items[j]}"
                                  for j in range(offsets[i], offsets[i + 1])) + "}"
                  for i in range(n)]
    elif pa.types.is_struct(t):
        fields = [(t.field(j).name, display_arrow(arr.field(j), False))
                  for j in range(t.num_fields)]
        values = ["{" + ", ".join(f"{name}: {f[i]}" for name, f in fields) + "}" for i in range(n)]
    else:
        raise Uncomparable(t)
    return [v if ok else null for v, ok in zip(values, arr.is_valid().to_pylist())]


def nonfinite_columns(reference):
    """Top-level float columns in which pyarrow finds NaN or ±inf."""
    table = reference.table()
    names = []
    for f, col in zip(table.schema, table.columns):
        if pa.types.is_floating(unwrap(f.type)):
            values = col.to_pylist()
            if any(v is not None and nonfinite_key(v) for v in values):
                names.append(f.name)
    return names


def float_text_key(v, t):
    """A float column cast to text: "NaN", "inf", "-inf" or the canonical finite value."""
    if v is None:
        return None
    if isinstance(v, str):
        if v in ("NaN", "inf", "-inf"):
            return v
        try:
            return float_key(Decimal(v), t)
        except ArithmeticError:
            return f"unexpected: {v!r}"
    return nonfinite_key(v) or float_key(v, t)


# running Medallion


class Run:
    """One Medallion command on the file at `loc`, and what came of it."""

    def __init__(self, step, argv, loc, keep_stdout=True):
        self.step, self.argv, self.loc = step, argv, loc
        self.content = None  # for SELECT *: what comparing its values found
        start = time.monotonic()
        try:
            done = subprocess.run(["prlimit", f"--as={ADDRESS_SPACE_LIMIT}", "--", *argv],
                                  stdout=subprocess.PIPE if keep_stdout else subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True, errors="replace",
                                  timeout=TIMEOUT_SECONDS)
            self.rc, self.stdout, self.stderr, self.hang = (done.returncode, done.stdout or "",
                                                            done.stderr, False)
        except subprocess.TimeoutExpired as e:
            self.rc, self.hang = None, True
            self.stdout, self.stderr = as_text(e.stdout), as_text(e.stderr)
        self.seconds = round(time.monotonic() - start, 3)

    def trouble(self):
        """What makes this run unacceptable whatever was expected of it, or None."""
        if self.hang:
            return f"hang (no exit after {TIMEOUT_SECONDS} s)"
        if self.rc is not None and self.rc < 0:
            return f"killed by {signal.Signals(-self.rc).name}: {self.said()}"
        lines = self.stderr.splitlines()
        at = next((i for i, ln in enumerate(lines) if any(m in ln for m in PANIC_MARKERS)), None)
        if at is not None:
            return "panic: " + " ".join(ln.strip() for ln in lines[at:at + 2])
        return None

    def said(self):
        """Medallion's error in one line: the first line and, if there is more, the last cause.

        The file's location, which the table column already shows, is abbreviated to LOC.
        """
        message = self.stderr.split("stack backtrace:")[0].replace(self.loc, "LOC")
        lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
        if not lines:
            return f"exit {self.rc}, nothing on stderr"
        return lines[0] if len(lines) == 1 else f"{lines[0]} … {lines[-1]}"

    def mentions(self, word):
        """Whether stderr says `word` (case-insensitively) other than in the file's name."""
        name = unquote(self.loc.rsplit("/", 1)[-1])
        text = self.stderr.replace(self.loc, "").replace(name, "")
        return word.lower() in text.lower()

    def record(self):
        return {"step": self.step, "argv": self.argv, "rc": self.rc, "hang": self.hang,
                "seconds": self.seconds, "stdout": self.stdout[:KEPT_OUTPUT_CHARS],
                "stderr": self.stderr[:KEPT_OUTPUT_CHARS]}


def as_text(out):
    if isinstance(out, bytes):
        return out.decode(errors="replace")
    return out or ""


def query_argv(binary, loc, sql, fmt="json", in_file_order=False):
    # In-process engine: the address-space limit guards the native reader's allocations; the
    # wasmtime guest reserves its linear memory's address space up front (and has its own
    # memory cap, tested in tests/guest.rs), so it cannot start under such a limit.
    argv = [binary, "query", sql, "--table", f"t={loc}", "--format", fmt, "--engine", "native"]
    # Rows come in file order from one partition; with more, DataFusion may interleave them.
    return argv + ["--partitions", "1"] if in_file_order else argv


def run_all(binary, loc, kind, steps, reference):
    """The steps, in order. SELECT * output is kept only when it is to be compared: a corpus
    file can hold gigabytes."""
    sql = {"count": COUNT_SQL, "select": select_sql(reference.schema)}
    runs = []
    for step in steps:
        if step == "inspect":
            runs.append(Run(step, [binary, "inspect", loc, "--json"], loc))
        else:
            # count(*) runs as users run it, with the default partitions.
            keep = step != "select" or (kind == "data" and reference.comparable())
            argv = query_argv(binary, loc, sql[step], in_file_order=step == "select")
            runs.append(Run(step, argv, loc, keep_stdout=keep))
    return runs


# judging the runs: each judge returns what is wrong with one run, or None


def rows_reported(run):
    """The row count a successful inspect or count run printed, or raise ValueError."""
    out = json.loads(run.stdout)
    return out["num_rows"] if run.step == "inspect" else out[0]["n"]


def problem_reading(run, reference):
    if run.rc != 0:
        return run.said()
    if run.step == "select":
        return problem_content(run, reference)
    try:
        got = rows_reported(run)
    except (ValueError, KeyError, IndexError, TypeError) as e:
        return f"unexpected output ({e}): {run.stdout[:200]!r}"
    return None if got == reference.rows else f"{got} rows, expected {reference.rows}"


def problem_content(run, reference):
    """Whether SELECT * decoded what pyarrow decodes (sets run.content for the record)."""
    if not reference.comparable():
        run.content = {"compared": False, "decoded_bytes": reference.decoded_bytes}
        return None
    try:
        table = reference.table()
        fields = json_fields(table.schema)
        theirs = reference_rows(table, fields)
    except Uncomparable as e:
        return f"cannot compare: {e}"
    except Exception as e:  # pyarrow reads the footer but not the pages
        run.content = {"compared": False, "pyarrow_error": f"{type(e).__name__}: {e}"}
        return None
    try:
        mine = medallion_rows(parse_medallion_json(run.stdout), fields)
    except Uncomparable as e:
        return f"cannot compare: {e}"
    except ValueError as e:
        return f"unexpected output ({e}): {run.stdout[:200]!r}"
    run.content = {"compared": True, "rows": len(mine), "sha256": digest(mine),
                   "pyarrow_sha256": digest(theirs)}
    if run.content["sha256"] == run.content["pyarrow_sha256"]:
        return None
    return "values differ from pyarrow's: " + (first_difference(mine, theirs, fields)
                                               or "same rows, different hash")


def problem_nonfinite(run, reference, names):
    """The float columns, cast to text, hold NaN and ±inf where pyarrow's do."""
    if run.rc != 0:
        return run.said()
    table = reference.table()
    try:
        parsed = parse_medallion_json(run.stdout)
        mine = [[float_text_key(row.get(n), table.schema.field(n).type) for n in names]
                for row in parsed]
    except (ValueError, AttributeError) as e:
        return f"unexpected output ({e}): {run.stdout[:200]!r}"
    columns = [[float_text_key(v, table.schema.field(n).type) for v in table.column(n).to_pylist()]
               for n in names]
    theirs = [list(row) for row in zip(*columns)]
    if mine == theirs:
        return None
    fields = [table.schema.field(n) for n in names]
    return "NaN/inf differ from pyarrow's: " + (first_difference(mine, theirs, fields) or "?")


def problem_maps(run, reference, fields):
    """The columns holding maps, as display text, read as pyarrow's do."""
    if run.rc != 0:
        return run.said()
    table = reference.table()
    try:
        lines = list(csv.reader(io.StringIO(run.stdout)))
    except csv.Error as e:
        return f"unexpected output ({e}): {run.stdout[:200]!r}"
    if not lines or lines[0] != [f.name for f in fields]:
        return f"unexpected output: {run.stdout[:200]!r}"
    mine = [[cell or None for cell in line] for line in lines[1:]]
    try:
        columns = [[v for chunk in table.column(f.name).chunks for v in display_arrow(chunk)]
                   for f in fields]
    except Uncomparable as e:
        return f"cannot compare: {e}"
    theirs = [list(row) for row in zip(*columns)]
    if mine == theirs:
        return None
    return "maps differ from pyarrow's: " + (first_difference(mine, theirs, fields) or "?")


def problem_refusing(run, needle=None):
    """The run must fail with a short error; with `needle`, one that mentions it."""
    if run.rc == 0:
        return "exit 0 (expected an error)"
    if not short_error(run.stderr):
        return (f"error is not short ({len(run.stderr.splitlines())} lines, "
                f"{len(run.stderr)} chars): {run.said()[:200]}")
    if needle and not run.mentions(needle):
        return f"error does not mention {needle!r}: {run.said()}"
    return None


def problem_tolerating(run):
    """pyarrow cannot read the file, so any row count goes; an error must still be clean."""
    return None if run.rc == 0 else problem_refusing(run)


def short_error(stderr):
    text = stderr.strip()
    return bool(text) and len(text.splitlines()) <= MAX_ERROR_LINES and len(text) <= MAX_ERROR_CHARS


def judge_for(kind, step, reference):
    # `inspect` reads only the footer: damage inside pages is invisible to it, so for bad
    # files it must merely not panic or hang; the query that reads the pages must refuse.
    if kind == "bad" and step == "inspect":
        return problem_tolerating
    return {
        "data": lambda run: problem_reading(run, reference),
        "encrypted": lambda run: problem_refusing(run, needle="encrypt"),
        "bad": problem_refusing,
        "pyarrow-unreadable": problem_tolerating,
    }[kind]


def one_line(runs, problems):
    """The result in a line: each problem after the steps that had it, or what Medallion said."""
    if problems:
        steps_by_problem = {}
        for step, problem in problems:
            steps_by_problem.setdefault(problem, []).append(step)
        return "; ".join(f"{','.join(steps)}: {problem}"
                         for problem, steps in steps_by_problem.items())
    said = [f"{run.step} {rows_or_none(run)}" for run in runs
            if run.rc == 0 and run.step in ("inspect", "count")]
    for run in runs:
        if run.step == "select" and run.content:
            said.append(content_said(run.content))
        elif run.step == "nonfinite":
            said.append("NaN/inf = pyarrow's")
        elif run.step == "maps":
            said.append("maps = pyarrow's")
    return ", ".join(said) if said else runs[0].said()


def content_said(content):
    if content["compared"]:
        return f"values = pyarrow's (sha256 {content['sha256'][:12]})"
    why = content.get("pyarrow_error") or f"{content['decoded_bytes'] >> 20} MiB decoded"
    return f"values not compared ({why})"


def rows_or_none(run):
    try:
        return rows_reported(run)
    except (ValueError, KeyError, IndexError, TypeError):
        return None


def check(binary, corpus, rel, kind, loc):
    """Run Medallion on one file; returns its result record (status still unjudged by lists)."""
    reference = Reference(corpus / rel)
    if kind == "data" and reference.rows is None:
        kind = "pyarrow-unreadable"
    steps = ("inspect", "select") if kind == "bad" else ("inspect", "count", "select")
    runs = run_all(binary, loc, kind, steps, reference)
    problems = [(run.step, p) for run in runs
                if (p := run.trouble() or judge_for(kind, run.step, reference)(run))]
    select = runs[-1]
    if kind == "data" and select.content and select.content["compared"]:
        for step, sql, fmt, judge in value_checks(reference):
            run = Run(step, query_argv(binary, loc, sql, fmt, in_file_order=True), loc)
            runs.append(run)
            if p := run.trouble() or judge(run):
                problems.append((run.step, p))
    return {"file": str(rel), "kind": kind, "expected_rows": reference.rows,
            "footer_rows": reference.footer_rows, "pyarrow_error": reference.error,
            "passed": not problems, "said": one_line(runs, problems),
            "problems": [f"{step}: {p}" for step, p in problems],
            "content": select.content,
            "runs": [run.record() for run in runs]}


def value_checks(reference):
    """(step, SQL, format, judge) of the checks of what SELECT *'s JSON cannot show."""
    checks = []
    if names := nonfinite_columns(reference):
        sql = "SELECT " + ", ".join(f"CAST({ident(n)} AS VARCHAR) AS {ident(n)}"
                                    for n in names) + " FROM t"
        checks.append(("nonfinite", sql, "json",
                       lambda run: problem_nonfinite(run, reference, names)))
    if fields := map_columns(reference.schema):
        sql = "SELECT " + ", ".join(ident(f.name) for f in fields) + " FROM t"
        checks.append(("maps", sql, "csv", lambda run: problem_maps(run, reference, fields)))
    return checks


def final_status(result, known):
    listed = result["file"] in known
    if result["passed"]:
        return "fixed" if listed else "ok"
    return "known" if listed else "FAIL"


# serving the corpus over HTTP


@contextlib.contextmanager
def served(root):
    """A rangeserve.py on `root` for the duration; yields its base URL."""
    proc = subprocess.Popen([sys.executable, str(RANGESERVE), str(root), "--port", "0"],
                            stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline().strip()
        if not line.startswith("listening on "):
            sys.exit(f"rangeserve.py did not start: {line!r}")
        yield line.removeprefix("listening on ")
    finally:
        proc.kill()
        proc.wait()


def location(corpus, rel, base_url):
    if base_url is None:
        return str((corpus / rel).resolve())
    return f"{base_url}/{quote(rel.as_posix())}"


# reporting


def expected_text(result):
    if result["kind"] == "data":
        return str(result["expected_rows"])
    return "?" if result["kind"] == "pyarrow-unreadable" else "error"


def print_line(result, width, known):
    reason = f"  [known: {known[result['file']]}]" if result["status"] == "known" else ""
    print(f"{result['status']:<5}  {result['file']:<{width}} {expected_text(result):>8}  "
          f"{result['said']}{reason}", flush=True)


def print_totals(results, known, seconds, mode):
    """The summary line (after any stale known-failures entries); True if nothing FAILed."""
    by_status = {}
    for r in results:
        by_status[r["status"]] = by_status.get(r["status"], 0) + 1
    parts = ", ".join(f"{by_status.get(s, 0)} {s}" for s in ("ok", "FAIL", "known", "fixed"))
    stale = sorted(set(known) - {r["file"] for r in results})
    for name in stale:
        print(f"note: known-failures entry {name!r} matches no file")
    compared = sum(1 for r in results if (r.get("content") or {}).get("compared"))
    print(f"conformance ({mode}): {parts} of {len(results)} files "
          f"({compared} compared value by value with pyarrow) in {seconds:.0f} s")
    return by_status.get("FAIL", 0) == 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("binary", help="the medallion executable")
    ap.add_argument("corpus", type=Path, help="a checkout of apache/parquet-testing")
    ap.add_argument("--http", action="store_true",
                    help="read every file through rangeserve.py instead of from disk")
    ap.add_argument("--known-failures", help="files whose failure does not fail the run")
    ap.add_argument("--json", dest="json_out", help="write every result (with outputs) here")
    args = ap.parse_args()

    known = load_known(args.known_failures)
    cases = discover(args.corpus)
    if not cases:
        sys.exit(f"no Parquet files under {args.corpus}/data or {args.corpus}/bad_data")
    width = max(len(str(rel)) for rel, _ in cases)
    start = time.monotonic()
    results = []
    with served(args.corpus) if args.http else contextlib.nullcontext() as base_url:
        for rel, kind in cases:
            result = check(args.binary, args.corpus, rel, kind, location(args.corpus, rel, base_url))
            result["status"] = final_status(result, known)
            print_line(result, width, known)
            results.append(result)
    seconds = time.monotonic() - start
    mode = "http" if args.http else "local"
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(
            {"binary": args.binary, "mode": mode, "seconds": round(seconds, 1),
             "results": results}, indent=1))
    return 0 if print_totals(results, known, seconds, mode) else 1


if __name__ == "__main__":
    sys.exit(main())
