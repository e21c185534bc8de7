"""The retail pipeline against an independent implementation: DuckDB runs the spec's semantics
over the same source files, and every table Medallion writes must come out equal, row for row.

Usage: python3 tests/retail_reference.py MEDALLION_BIN WORKDIR      (about 10 s)

Medallion's side (native engine), into WORKDIR/retail and WORKDIR/lake:
  run 1  `medallion demo --scale 0.3`: generates three days of retail extracts and runs
         examples/retail/pipeline.toml;
  run 2  `demo --more`: a fourth day, run incrementally (bronze appends the new files only,
         silver and gold are rebuilt);
  run 3  a fifth day of files written by this script (`write_edge_day`) with what the demo's data
         never has: ties and NULLs in dedupe orderings, NULLs in expectations, casts that fail,
         unusual JSON forms, a column only one Parquet file has;
  run 4  one more file with statuses a `fail` expectation rejects: the run must stop, say which
         expectation failed on how many rows, and change no table.

The reference (class `Reference`) builds every table of the spec from the source files the run
saw, in DuckDB alone:
  bronze  CSV with DuckDB's strict CSV reader (all text, then typed); NDJSON split into lines
          and read with DuckDB's JSON functions; Parquet with read_parquet. The lines Medallion
          must quarantine are predicted with their file and line number.
  silver  the spec's SQL over the reference's own bronze and silver tables, then casts
          (TRY_CAST), expectations as boolean columns (NULL is a violation; warn counts, drop
          quarantines, fail stops the run), dedupe as QUALIFY row_number() with the tie-break of
          core/src/quality.rs.
  gold    the spec's SQL, unchanged, over the reference's silver tables.
Where Medallion's rules are not what plain DuckDB does, the reference says so in a comment
("Medallion: …"). The one input taken from Medallion is `_ingested_at`, the run's clock, which
no source file holds; it is checked instead of trusted (one value per table and run, inside
the run's wall-clock window).

Compared after each of runs 1-3: every bronze, silver and gold table, read with DuckDB's
`delta_scan` (the latest version) or `deltalake` (time travel to an earlier run's version);
every quarantine (bronze: file, line and kind of error of rescued source lines, the raw text of
lines that are not JSON; silver: exactly the rows the table's latest build set aside, with their
values before the casts and the reason); the run report's counters (rows in and out, dropped,
quarantined, deduplicated, violations per expectation). Values are compared exactly: integers
and decimals by value, doubles bit for bit, timestamps to the microsecond; gold also in row
order (each gold query orders by a unique key). No float tolerance is needed: the engines
compute `amount` with the same single multiplication, and the only sums whose order differs
(gold's sum(amount), added in parallel by both) are rounded to cents before they are written.
(customer_segments does compare an unrounded sum with 500; a customer whose cents add up to
exactly 500.00 could land on either side of it, in either engine. The demo's data has none.)

Medallion bugs this test found, fixed since (it fails again if one comes back):
  - a NULL expectation result was not a violation (core/src/quality.rs, `clean`: Arrow's
    null-propagating `or` left the row's "violated" slot NULL, so warn/drop/fail counts left it
    out and a batch whose only violations were NULLs was skipped);
  - JSON doubles were read without serde_json's `float_roundtrip` (989.9951327998887 read as
    989.9951327998888);
  - a JSON number with a fraction in a declared integer column was truncated (2.5 read as 2);
    the line now goes to quarantine, "column `quantity`: 2.5 is not an integer (Int64)";
  - each rebuild of a silver table appended every row it dropped to the table's quarantine, so
    a row still bad in the next run was there twice; the quarantine is now replaced on every
    rebuild and holds exactly the rows the latest build set aside (bronze quarantines still
    append: each run's new source lines).

Exits non-zero, naming each differing table with its differing rows.
"""

import csv
import glob
import json
import re
import shutil
import subprocess
import sys
import time
import tomllib
from collections import Counter
from pathlib import Path

import deltalake
import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from delta_readers import load_duckdb_delta  # noqa: E402

SCALE = "0.3"
SHOWN_DIFFERENCES = 5


class ReferenceRunFailed(Exception):
    """The reference predicts that the run fails; `expectation` and `violations` are set when
    a `fail` expectation is violated."""

    def __init__(self, message, table=None, expectation=None, violations=None):
        super().__init__(message)
        self.table, self.expectation, self.violations = table, expectation, violations


# ── the reference: the spec's semantics in DuckDB ────────────────────────────────────────────

SPEC_TYPES = {
    "string": "VARCHAR", "varchar": "VARCHAR", "text": "VARCHAR", "utf8": "VARCHAR",
    "bigint": "BIGINT", "long": "BIGINT", "int64": "BIGINT",
    "int": "INTEGER", "integer": "INTEGER", "int32": "INTEGER",
    "smallint": "SMALLINT", "short": "SMALLINT", "int16": "SMALLINT",
    "tinyint": "TINYINT", "byte": "TINYINT", "int8": "TINYINT",
    "double": "DOUBLE", "float64": "DOUBLE", "double precision": "DOUBLE",
    "float": "FLOAT", "real": "FLOAT", "float32": "FLOAT",
    "boolean": "BOOLEAN", "bool": "BOOLEAN",
    "date": "DATE",
    # Medallion: every timestamp is UTC, microseconds (Delta's `timestamp`); the session runs
    # in UTC so that date_trunc('day', …) cuts days at UTC midnight, as DataFusion does.
    "timestamp": "TIMESTAMPTZ", "timestamptz": "TIMESTAMPTZ",
    "binary": "BLOB", "bytea": "BLOB",
}
INTEGER_TYPES = {"TINYINT", "SMALLINT", "INTEGER", "BIGINT"}
# Medallion's dedupe breaks ties on columns Arrow calls primitive (numbers, dates, times) or
# Utf8 or Boolean (core/src/quality.rs, `dedupe`); nested and binary columns do not take part.
ORDERABLE = re.compile(
    r"^(TINYINT|SMALLINT|INTEGER|BIGINT|HUGEINT|UTINYINT|USMALLINT|UINTEGER|UBIGINT|FLOAT|DOUBLE"
    r"|DECIMAL\(.*\)|DATE|TIME|TIMESTAMP.*|INTERVAL|VARCHAR|BOOLEAN)$"
)


def duck_type(spec_type):
    name = spec_type.strip().lower()
    if name in SPEC_TYPES:
        return SPEC_TYPES[name]
    m = re.fullmatch(r"(?:decimal|numeric)\(\s*(\d+)\s*,\s*(\d+)\s*\)", name)
    if m:
        return f"DECIMAL({m[1]},{m[2]})"
    raise SystemExit(f"the reference does not know the spec type `{spec_type}`")


def from_text(expr, target):
    """SQL for text `expr` read as `target`, NULL when it does not convert.

    Medallion reads text with Arrow's cast (CSV fields, silver casts of strings), which accepts
    less than DuckDB's TRY_CAST: an integer is digits with an optional sign, spaces around
    allowed ('5.0', '1e3' and '1_000' are not integers to Arrow); a timestamp has its seconds
    ('2026-01-05 08:02' is not a timestamp to Arrow). Within those forms the two agree.
    """
    if target == "VARCHAR":
        return expr
    if target in INTEGER_TYPES:
        return f"CASE WHEN regexp_full_match({expr}, '\\s*[+-]?[0-9]+\\s*') THEN TRY_CAST({expr} AS {target}) END"
    if target == "TIMESTAMPTZ":
        form = r"\d{4}-\d{2}-\d{2}([Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?)?\s*([Zz]|[+-]\d{2}(:?\d{2})?)?"
        return f"CASE WHEN regexp_full_match({expr}, {lit(form)}) THEN TRY_CAST({expr} AS {target}) END"
    return f"TRY_CAST({expr} AS {target})"


def q(ident):
    return '"' + ident.replace('"', '""') + '"'


def lit(text):
    return "'" + text.replace("'", "''") + "'"


class Reference:
    """Builds a spec's tables in a DuckDB connection from source files.

    `files[table]` lists (location, ingested_at in µs) of the source files the run has seen,
    in the order Medallion lists them. After `build()`, every table of the spec is a DuckDB
    table of the same name; `quarantine[table]` holds what its quarantine gets, and
    `counters[table]` what the run report should say.
    """

    def __init__(self, spec, files):
        self.spec = spec
        self.files = files
        self.con = duckdb.connect()
        self.con.execute("SET TimeZone = 'UTC'")
        self.quarantine = {}  # table -> rows a build sets aside (bronze: rescued lines as dicts)
        self.counters = {}  # silver table -> counters of the run report
        self.file_rows = {}  # (bronze table, source file) -> rows read from the file
        self.tmp = 0

    def fresh(self, what):
        self.tmp += 1
        return f"__{what}_{self.tmp}"

    def build(self):
        for name, src in self.spec.get("bronze", {}).items():
            self.bronze(name, src)
        for name in dependency_order(self.spec, "silver"):
            self.silver(name, self.spec["silver"][name])
        for name in dependency_order(self.spec, "gold"):
            self.con.execute(f"CREATE TABLE {q(name)} AS {self.spec['gold'][name]['sql']}")
        return self

    # bronze ----------------------------------------------------------------------------------

    def bronze(self, name, src):
        fmt = src.get("format") or source_format(src["path"])
        declared = {c: duck_type(t) for c, t in (src.get("schema") or {}).items()}
        parts, rescued = [], []
        for location, ingested_us in self.files[name]:
            if fmt == "csv":
                part, bad = self.csv_file(location, declared, src.get("csv", {}))
            elif fmt == "ndjson":
                # Medallion: the declared schema's columns are in the order of `columns`, else
                # sorted by name (spec.rs, `declared_schema`: the schema is a BTreeMap).
                order = src.get("columns") or sorted(declared)
                ordered = {c: declared[c] for c in order} if declared else {}
                part, bad = self.ndjson_file(location, ordered)
            else:
                # Medallion: Parquet is read as it is; a declared schema does not apply to it.
                part, bad = f"SELECT * FROM read_parquet({lit(location)})", []
            parts.append(self.with_lineage(part, location, ingested_us))
            rescued += [dict(r, _ingested_at=ingested_us) for r in bad]
        self.check_bronze_types(name, parts)
        for (location, _), part in zip(self.files[name], parts):
            self.file_rows[(name, location)] = self.con.execute(f"SELECT count(*) FROM ({part})").fetchone()[0]
        # Medallion: files may differ in their columns (a missing column reads as NULL), not
        # in the type of a column they share (`merge_for_bronze`): union by name.
        self.con.execute(f"CREATE TABLE {q(name)} AS " + " UNION ALL BY NAME ".join(parts))
        self.quarantine[name] = rescued

    def with_lineage(self, part, location, ingested_us):
        """Medallion (pipeline.rs, `with_lineage`): `_ingested_at` is the run's clock, one value
        per table and run; `_source_file` the file's location; both replace same-named source
        columns."""
        own = {"_ingested_at", "_source_file"} & set(self.columns(f"({part})"))
        exclude = f" EXCLUDE ({', '.join(sorted(own))})" if own else ""
        return (f"SELECT *{exclude}, make_timestamp({ingested_us}::BIGINT)::TIMESTAMPTZ AS _ingested_at, "
                f"{lit(location)} AS _source_file FROM ({part})")

    def check_bronze_types(self, name, parts):
        seen = {}
        for part in parts:
            for col, typ, *_ in self.con.execute(f"DESCRIBE ({part})").fetchall():
                if seen.setdefault(col, typ) != typ:
                    raise ReferenceRunFailed(
                        f"bronze `{name}`: column `{col}` is {seen[col]} in one file and {typ} in another"
                    )

    def count(self, table):
        return self.con.execute(f"SELECT count(*) FROM {q(table)}").fetchone()[0]

    def csv_file(self, location, declared, opts):
        """A CSV file as a typed SELECT, and the records Medallion rescues from it.

        Medallion (source.rs, `parse_csv`): RFC 4180 quoting; a record with another number of
        fields than the header is rescued whole; an empty field is NULL; each column is read
        as its declared type and a value that does not convert rescues its whole record.
        (Undeclared columns would be inferred; every retail CSV column is declared, and the
        reference insists on it.)
        """
        if not opts.get("header", True):
            raise SystemExit("the reference reads CSV files with a header only")
        delim = opts.get("delimiter", ",")
        with open(location, newline="", encoding="utf-8") as f:
            header = [h.strip() for h in next(csv.reader(f, delimiter=delim))]
        undeclared = [h for h in header if h not in declared]
        if undeclared:
            raise SystemExit(f"{location}: the reference expects every column declared, not {undeclared}")
        rejects, scan = self.fresh("rejects"), self.fresh("scan")
        text = self.fresh("csv")
        columns = "{" + ", ".join(f"{lit(h)}: 'VARCHAR'" for h in header) + "}"
        self.con.execute(
            f"CREATE TEMP TABLE {text} AS SELECT row_number() OVER () AS __record, * FROM read_csv("
            f"{lit(location)}, header = true, auto_detect = false, columns = {columns}, "
            f"delim = {lit(delim)}, quote = '\"', escape = '\"', strict_mode = true, "
            f"ignore_errors = true, store_rejects = true, rejects_table = {lit(rejects)}, "
            f"rejects_scan = {lit(scan)})"
        )
        structural = self.con.execute(
            # DuckDB files a short record once per missing column: one entry per line.
            f"SELECT line, min(error_type), any_value(csv_line) FROM {rejects} GROUP BY line ORDER BY line"
        ).fetchall()
        kinds = {"MISSING COLUMNS": "field count", "TOO MANY COLUMNS": "field count"}
        rescued = []
        for line, error_type, raw in structural:
            if error_type not in kinds:
                raise SystemExit(f"{location}:{line}: DuckDB rejects the record ({error_type}), Medallion would not")
            rescued.append(dict(_source_file=location, _line=line, kind=kinds[error_type], raw=raw))
        # Line numbers of the records DuckDB kept: every physical line is one record here (no
        # quoted newlines in the extracts, checked), so the k-th kept record is on the k-th line
        # that is neither the header nor rejected.
        with open(location, encoding="utf-8") as f:
            n_lines = sum(1 for _ in f)
        kept = self.count(text)
        if 1 + kept + len(structural) != n_lines:
            raise SystemExit(f"{location}: records span lines; the reference's line numbering does not hold")
        rejected = {line for line, *_ in structural}
        lines = [n for n in range(2, n_lines + 1) if n not in rejected]
        line_of = self.fresh("lines")
        self.con.execute(f"CREATE TEMP TABLE {line_of} (__record BIGINT, __line BIGINT)")
        self.con.executemany(f"INSERT INTO {line_of} VALUES (?, ?)", list(enumerate(lines, 1)))

        # Medallion: an empty field is NULL (DuckDB agrees for unquoted and quoted ones; said
        # here so the rule does not rest on a reader default).
        field = {h: f"NULLIF({q(h)}, '')" for h in header}
        typed = ", ".join(f"{from_text(field[h], declared[h])}::{declared[h]} AS {q(h)}" for h in header)
        # The first column that fails names the reason (Medallion checks columns in order).
        failed = " ".join(
            f"WHEN {field[h]} IS NOT NULL AND ({from_text(field[h], declared[h])}) IS NULL THEN {lit(h)}"
            for h in header
        )
        # The record as Medallion keeps it in quarantine: its fields joined by the delimiter.
        raw = f"concat_ws({lit(delim)}, " + ", ".join(f"coalesce({field[h]}, '')" for h in header) + ")"
        records = self.fresh("records")
        self.con.execute(
            f"CREATE TEMP TABLE {records} AS SELECT l.__line, "
            f"CASE {failed} ELSE NULL END AS __failed, {typed}, "
            f"{raw} AS __raw "
            f"FROM {text} t JOIN {line_of} l USING (__record)"
        )
        for line, col, raw in self.con.execute(
            f"SELECT __line, __failed, __raw FROM {records} WHERE __failed IS NOT NULL"
        ).fetchall():
            rescued.append(dict(_source_file=location, _line=line, kind=f"cannot read {col}", raw=raw))
        cols = ", ".join(q(h) for h in header)
        return f"SELECT {cols} FROM {records} WHERE __failed IS NULL", rescued

    def ndjson_file(self, location, declared):
        """An NDJSON file as a typed SELECT, and the lines Medallion rescues from it.

        Medallion (source.rs, `parse_ndjson`): the file is split at '\\n' (lines numbered from
        1, blank ones skipped after trimming whitespace); a line that is not JSON, or JSON but
        not an object, is rescued; with a declared schema, keys outside it are ignored and
        missing keys are NULL; without one, the types are inferred per file (below); a value
        of the wrong type rescues its line. A number written with a fraction or an exponent
        (2.5, 7.0, 1e3) in a declared integer column rescues its line before anything else is
        decoded (`non_integral`), naming the first such column of the declared schema.
        """
        lines = self.fresh("lines")
        # Medallion trims with Rust's `str::trim` (Unicode whitespace); these are the ASCII ones.
        ws = "chr(32) || chr(9) || chr(10) || chr(11) || chr(12) || chr(13)"
        self.con.execute(
            f"CREATE TEMP TABLE {lines} AS SELECT __line, trim(raw, {ws}) AS txt FROM ("
            f"SELECT generate_subscripts(ls, 1) AS __line, unnest(ls) AS raw FROM ("
            f"SELECT string_split(content, chr(10)) AS ls FROM read_text({lit(location)})))"
        )
        self.con.execute(f"DELETE FROM {lines} WHERE txt = ''")
        # Two statements, so that DuckDB never parses a line json_valid() refused.
        self.con.execute(f"ALTER TABLE {lines} ADD COLUMN valid BOOLEAN")
        self.con.execute(f"UPDATE {lines} SET valid = json_valid(txt)")
        objects = self.fresh("objects")
        self.con.execute(
            f"CREATE TEMP TABLE {objects} AS SELECT __line, txt::JSON AS j FROM {lines} WHERE valid"
        )
        rescued = [
            dict(_source_file=location, _line=line, kind="invalid JSON", raw=txt)
            for line, txt in self.con.execute(
                f"SELECT __line, txt FROM {lines} WHERE NOT valid ORDER BY __line"
            ).fetchall()
        ]
        rescued += [
            dict(_source_file=location, _line=line, kind="not a JSON object", raw=None)
            for (line,) in self.con.execute(
                f"SELECT __line FROM {objects} WHERE json_type(j) <> 'OBJECT' ORDER BY __line"
            ).fetchall()
        ]
        self.con.execute(f"DELETE FROM {objects} WHERE json_type(j) <> 'OBJECT'")
        schema = declared or self.infer_json_schema(objects, location)

        # One value per column: text of a scalar (JSON null is NULL), and whether it fits.
        values, fits = [], []
        for col, typ in schema.items():
            path = lit("$." + json_key(col))
            jt = f"json_type(j, {path})"
            text = f"(j ->> {path})"
            if typ == "VARCHAR":
                # Medallion decodes with `with_coerce_primitive(true)`: numbers and booleans
                # read as their JSON text; objects and arrays do not fit.
                value, ok = text, f"{jt} NOT IN ('OBJECT', 'ARRAY')"
            elif typ in ("DOUBLE", "FLOAT"):
                # Numbers, and strings that parse as one (Arrow's JSON decoder takes both). The
                # text is the number as written: parsed once, correctly rounded.
                value = from_text(text, typ)
                ok = f"{jt} IN ('UBIGINT', 'BIGINT', 'DOUBLE', 'VARCHAR') AND {value} IS NOT NULL"
            elif typ in INTEGER_TYPES:
                # Integers and strings of digits. A number with a fraction or an exponent, even
                # of an integral value (7.0, 1e3), is not an integer: its line is rescued (below,
                # `not_integer`), as its text ("7.0") would be. (Not covered: `-0`, an integer
                # literal DuckDB reads as 0, which serde_json reads as the float -0.0, so
                # Medallion rescues it as "-0.0 is not an integer"; the edge day has none.)
                value = f"CASE WHEN {jt} <> 'DOUBLE' THEN {from_text(text, typ)} END"
                ok = f"{jt} IN ('UBIGINT', 'BIGINT', 'VARCHAR') AND ({value}) IS NOT NULL"
            else:
                # Dates and timestamps come as strings in the extracts.
                value = from_text(text, typ)
                ok = f"{jt} = 'VARCHAR' AND {value} IS NOT NULL"
            values.append(f"({value})::{typ} AS {q(col)}")
            fits.append(f"({jt} IS NULL OR {jt} = 'NULL' OR ({ok}))")
        # Medallion (source.rs, `non_integral`): with a declared schema, the first integer
        # column, in the schema's order, holding a JSON number that is not an integer literal.
        not_integer = " ".join(
            f"WHEN json_type(j, {lit('$.' + json_key(col))}) = 'DOUBLE' THEN {lit(col)}"
            for col, typ in declared.items() if typ in INTEGER_TYPES
        )
        not_integer = f"CASE {not_integer} END" if not_integer else "NULL"
        decoded = self.fresh("decoded")
        self.con.execute(
            f"CREATE TEMP TABLE {decoded} AS SELECT __line, j, {not_integer} AS __not_integer, "
            f"{' AND '.join(fits)} AS __fits, {', '.join(values)} FROM {objects}"
        )
        rescued += [
            dict(_source_file=location, _line=line,
                 kind="decode" if col is None else f"not an integer {col}", raw=None)
            for line, col in self.con.execute(
                f"SELECT __line, __not_integer FROM {decoded} "
                f"WHERE __not_integer IS NOT NULL OR NOT __fits ORDER BY __line"
            ).fetchall()
        ]
        cols = ", ".join(q(c) for c in schema)
        return f"SELECT {cols} FROM {decoded} WHERE __not_integer IS NULL AND __fits", rescued

    def infer_json_schema(self, objects, location):
        """Arrow's JSON schema inference (`infer_json_schema_from_iterator`) for flat objects:
        integers → BIGINT, any fraction → DOUBLE, strings → VARCHAR (never a date or timestamp:
        inference does not look inside strings), booleans → BOOLEAN, a mix of scalars → VARCHAR."""
        kinds = {}
        for key, jt in self.json_key_types(objects):
            kinds.setdefault(key, set())
            if jt != "NULL":
                kinds[key].add(jt)
        schema = {}
        for key, seen in kinds.items():
            if seen <= {"UBIGINT", "BIGINT"} and seen:
                schema[key] = "BIGINT"
            elif seen <= {"UBIGINT", "BIGINT", "DOUBLE"} and seen:
                schema[key] = "DOUBLE"
            elif seen == {"BOOLEAN"}:
                schema[key] = "BOOLEAN"
            elif seen and not seen & {"OBJECT", "ARRAY"}:
                schema[key] = "VARCHAR"
            else:
                raise SystemExit(f"{location}: key `{key}` is {seen or 'always null'}; the reference infers flat scalar columns only")
        return schema

    def json_key_types(self, objects):
        rows = self.con.execute(
            f"SELECT DISTINCT k FROM (SELECT unnest(json_keys(j)) AS k FROM {objects})"
        ).fetchall()
        out = []
        for (key,) in rows:
            path = lit("$." + json_key(key))
            out += [(key, jt) for (jt,) in self.con.execute(
                f"SELECT DISTINCT json_type(j, {path}) FROM {objects} WHERE json_exists(j, {path})"
            ).fetchall()]
        return out

    # silver ----------------------------------------------------------------------------------

    def silver_new_rows(self, name, t, moved, files):
        """The counts of an incremental refresh: the table's casts and expectations over the
        rows its SQL gives for `files`, the new source files of bronze table `moved` (the other
        inputs as they are), without the dedupe (that runs against the table's files)."""
        view, into = f"__new_{moved}", f"__inc_{name}"
        listed = ", ".join(lit(f) for f in files) or "NULL"
        self.con.execute(f"CREATE OR REPLACE TEMP VIEW {view} AS SELECT * FROM {q(moved)} "
                         f"WHERE _source_file IN ({listed})")
        sql = re.sub(rf"\b{re.escape(moved)}\b", view, t["sql"])
        counts = self.silver(name, {**t, "sql": sql, "dedupe": None}, into=into)
        self.con.execute(f"DROP TABLE {q(into)}")
        self.con.execute(f"DROP VIEW {view}")
        return counts

    def silver(self, name, t, into=None):
        """Casts, then expectations, then dedupe, on the result of the table's SQL
        (core/src/quality.rs, `clean`). `into`: build into that table and only return the
        counts (the table `name` and its quarantine stay as they are)."""
        dest = into or name
        result = self.fresh("result")
        self.con.execute(
            f"CREATE TEMP TABLE {result} AS SELECT row_number() OVER () AS __row, * FROM ({t['sql']})"
        )
        columns = self.columns(result)[1:]
        casts = {c: duck_type(ty) for c, ty in (t.get("casts") or {}).items()}
        types = dict(self.con.execute(f"SELECT column_name, column_type FROM (DESCRIBE {result})").fetchall())
        unknown = set(casts) - set(columns)
        if unknown:
            raise SystemExit(f"silver `{name}`: cast of unknown columns {sorted(unknown)}")

        # 1. casts: a value that does not convert (non-NULL before, NULL after) quarantines its
        # row. Medallion: a column already of the target type is left alone.
        cast_sql, failed = [], []
        for c in columns:
            target = casts.get(c)
            if target is None or types[c] == target:
                cast_sql.append(q(c))
                continue
            conv = from_text(q(c), target) if types[c] == "VARCHAR" else f"TRY_CAST({q(c)} AS {target})"
            cast_sql.append(f"({conv})::{target} AS {q(c)}")
            failed.append((c, f"({q(c)} IS NOT NULL AND ({conv}) IS NULL)"))
        casted = self.fresh("casted")
        cast_flags = "".join(f", {cond} AS {q('__cast_' + c)}" for c, cond in failed)
        self.con.execute(
            f"CREATE TEMP TABLE {casted} AS SELECT __row, {', '.join(cast_sql)}{cast_flags} FROM {result}"
        )

        # 2. expectations, evaluated on the cast values of every row — also rows a failed cast
        # or an earlier `drop` already quarantines (Medallion counts violations over all rows,
        # and a `fail` expectation stops the run even if its row was to be dropped anyway).
        # NULL is a violation: `quantity > 0` does not let a missing quantity through.
        expect = t.get("expect", [])
        checked = self.fresh("checked")
        violations = "".join(
            f", NOT coalesce(({e['condition']}), false) AS {q('__violates_' + e['name'])}"
            for e in expect
        )
        self.con.execute(f"CREATE TEMP TABLE {checked} AS SELECT *{violations} FROM {casted}")
        counts = {}
        for e in expect:
            counts[e["name"]] = self.con.execute(
                f"SELECT count(*) FROM {checked} WHERE {q('__violates_' + e['name'])}"
            ).fetchone()[0]
            if e.get("on_violation", "warn") == "fail" and counts[e["name"]]:
                raise ReferenceRunFailed(
                    f"silver `{name}`: expectation `{e['name']}` fails for {counts[e['name']]} rows",
                    name, e["name"], counts[e["name"]],
                )
        # The reason a row is set aside: the first failed cast in column order, else the first
        # violated `drop` expectation in spec order.
        reasons = [f"WHEN {q('__cast_' + c)} THEN {lit('cast ' + c)}" for c, _ in failed] + [
            f"WHEN {q('__violates_' + e['name'])} THEN {lit('expectation ' + e['name'])}"
            for e in expect
            if e.get("on_violation", "warn") == "drop"
        ]
        reason = f"CASE {' '.join(reasons)} END" if reasons else "NULL"
        judged = self.fresh("judged")
        self.con.execute(f"CREATE TEMP TABLE {judged} AS SELECT __row, {reason} AS __reason FROM {checked}")
        # Quarantined rows keep their values from before the casts.
        quarantined = self.rows(
            f"SELECT r.* EXCLUDE (__row), j.__reason AS _quarantine_reason FROM {result} r "
            f"JOIN {judged} j USING (__row) WHERE j.__reason IS NOT NULL"
        )
        if into is None:
            self.quarantine[name] = quarantined
        kept = self.fresh("kept")
        self.con.execute(
            f"CREATE TEMP TABLE {kept} AS SELECT c.__row, {', '.join('c.' + q(x) for x in columns)} "
            f"FROM {casted} c JOIN {judged} j USING (__row) WHERE j.__reason IS NULL"
        )

        # 3. dedupe: per key, the greatest `order_by` (NULLs last); ties go to the smallest
        # values of the other orderable columns, in column order, NULLs last (quality.rs).
        d = t.get("dedupe")
        out_cols = ", ".join(q(x) for x in columns)
        if d:
            kept_types = dict(self.con.execute(f"SELECT column_name, column_type FROM (DESCRIBE {kept})").fetchall())
            tiebreak = [
                f"{q(c)} ASC NULLS LAST"
                for c in columns
                if c not in d["key"] and c != d["order_by"] and ORDERABLE.match(kept_types[c])
            ]
            order = ", ".join([f"{q(d['order_by'])} DESC NULLS LAST", *tiebreak])
            self.con.execute(
                f"CREATE TABLE {q(dest)} AS SELECT {out_cols} FROM {kept} "
                f"QUALIFY row_number() OVER (PARTITION BY {', '.join(q(k) for k in d['key'])} "
                f"ORDER BY {order}) = 1"
            )
        else:
            self.con.execute(f"CREATE TABLE {q(dest)} AS SELECT {out_cols} FROM {kept}")
        n_in, n_kept = self.count(result), self.count(kept)
        counters = dict(
            rows_in=n_in, rows_out=self.count(dest), dropped=n_in - n_kept,
            quarantined=n_in - n_kept, deduplicated=n_kept - self.count(dest), expectations=counts,
        )
        if into is None:
            self.counters[name] = counters
        return counters

    def columns(self, table):
        return [r[0] for r in self.con.execute(f"DESCRIBE {table}").fetchall()]

    def rows(self, sql):
        return self.con.execute(sql).to_arrow_table()

    def table(self, name):
        return self.con.execute(f"SELECT * FROM {q(name)}").to_arrow_table()

    def gold(self, name):
        """Gold in the order its SQL gives (every gold query orders by a unique key)."""
        return self.con.execute(self.spec["gold"][name]["sql"]).to_arrow_table()


def json_key(key):
    return key if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key) else json.dumps(key)


def source_format(path):
    lower = path.lower()
    for ext, fmt in ((".parquet", "parquet"), (".csv", "csv"), (".ndjson", "ndjson"),
                     (".jsonl", "ndjson"), (".json", "ndjson")):
        if lower.endswith(ext):
            return fmt
    raise SystemExit(f"cannot tell the format of {path}")


def dependency_order(spec, layer):
    """Tables of a layer, each after the tables of the same layer its SQL names."""
    names = list(spec.get(layer, {}))
    reads = {
        n: {m for m in names if m != n and re.search(rf"\b{re.escape(m)}\b", spec[layer][n]["sql"])}
        for n in names
    }
    order = []
    while len(order) < len(names):
        ready = [n for n in names if n not in order and reads[n] <= set(order)]
        if not ready:
            raise SystemExit(f"{layer} tables read each other in a cycle")
        order += ready
    return order


# ── Medallion's side ─────────────────────────────────────────────────────────────────────────


def medallion(bin_, args):
    """Runs the CLI; returns (exit status, stdout, stderr, wall-clock window in µs)."""
    started = time.time()
    p = subprocess.run([bin_, *map(str, args)], capture_output=True, text=True)
    window = (int(started * 1e6), int(time.time() * 1e6))
    return p.returncode, p.stdout, p.stderr, window


def delta_tables(lake):
    return sorted(Path(p).parent for p in glob.glob(f"{lake}/*/*/_delta_log"))


def latest_version(path):
    return max(int(Path(f).stem) for f in glob.glob(f"{path}/_delta_log/*.json"))


def lake_versions(lake):
    return {f"{p.parent.name}/{p.name}": latest_version(p) for p in delta_tables(lake)}


# ── the edge-case day ────────────────────────────────────────────────────────────────────────
# The demo's extracts exercise malformed lines, duplicates, late updates and broken references,
# but never a tie in a dedupe ordering, a NULL ordering column, a NULL in an expectation, a cast
# that fails in silver, or a value of an unusual JSON form. A third run adds one day of files
# written here that do, so that those rules are compared too. Each line says what it tests.


def pick_customer(data):
    """A customer with a well-formed row (so silver knows its region)."""
    with open(data / "customers.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    return int(next(r for r in rows[1:] if len(r) == len(rows[0]))[0])


def write_edge_day(data):
    c = pick_customer(data)

    def order(oid, status, updated, **extra):
        o = {"order_id": oid, "customer_id": c, "order_ts": "2026-01-05T09:00:00Z", "status": status,
             "channel": "web", "updated_at": updated}
        o.update(extra)
        return json.dumps(o, separators=(",", ":"))

    lines = [
        # A tie on updated_at: the smaller status wins (tie-break on the other columns, ascending).
        order(900001, "paid", "2026-01-05T09:30:00Z"),
        order(900001, "cancelled", "2026-01-05T09:30:00Z"),
        # A NULL ordering value loses to any value (DESC NULLS LAST).
        order(900002, "shipped", None),
        order(900002, "placed", "2026-01-05T10:00:00Z"),
        # An integer as a JSON string, a timestamp without a zone (UTC) and one with an offset,
        # a key the schema does not have (ignored), a missing key (NULL).
        json.dumps({"order_id": "900003", "customer_id": c, "order_ts": "2026-01-05 11:00:00",
                    "status": "paid", "updated_at": "2026-01-05T13:00:00+02:00", "coupon": "X"}),
        # Whitespace around a line and a CR (a CRLF file) are trimmed; blank lines are skipped.
        "  " + order(900004, "paid", "2026-01-05T12:00:00Z") + " \r",
        "",
        "   ",
        # JSON that is not an object.
        "[900005]",
        "42",
        # An object where a bigint goes, and a timestamp that does not parse: the line is rescued.
        order(900006, "paid", "2026-01-05T12:00:00Z", customer_id={"id": c}),
        order(900007, "paid", "2026-01-05T12:00:00Z", order_ts="yesterday"),
        # A boolean where a string goes reads as its JSON text.
        order(900008, "paid", "2026-01-05T12:00:00Z", channel=True),
        # Expectations run before dedupe: a later version without a customer is dropped, and
        # the earlier good version stays.
        order(900009, "placed", "2026-01-05T12:00:00Z"),
        order(900009, "paid", "2026-01-05T12:30:00Z", customer_id=None),
    ]
    (data / "orders" / "orders-9000-edge.ndjson").write_text("\n".join(lines) + "\n")

    def item(oid, line, product, quantity, price):
        return json.dumps({"order_id": oid, "line_no": line, "product_id": product,
                           "quantity": quantity, "unit_price": price}, separators=(",", ":"))

    (data / "order_items" / "order_items-9000-edge.ndjson").write_text("\n".join([
        # (900001, 1) is in the next file too, read by the same run: the same ingested_at, so
        # the smaller product_id wins.
        item(900001, 1, 2, 1, 10.0),
        # A NULL quantity violates `quantity > 0` (NULL is a violation): dropped.
        item(900001, 2, 1, None, 5.0),
        # A NULL product has no category: dropped by known_product.
        item(900002, 1, None, 2, 3.5),
        # Numbers as JSON strings.
        item(900003, 1, 3, "3", "12.50"),
        item(900004, 1, 3, 1, 0.1),
        item(900008, 1, 1, 2, 19.99),
        # A double as Python, JavaScript and Rust write it (the shortest text that reads back
        # as the same double): it must read back as that double.
        item(900004, 2, 2, 1, 989.9951327998887),
        # 2.5 is not a bigint: the line goes to quarantine, and so do 7.0 and 1e3 (integral
        # values, not integers).
        item(900008, 2, 2, 2.5, 4.0),
        item(900008, 3, 2, 7.0, 4.0),
        item(900008, 4, 2, 1, 4.0).replace('"quantity":1,', '"quantity":1e3,'),
        # Two integer columns with fractions: the reason names the first in the declared
        # schema's order (line_no, not order_id, which comes first in the TOML).
        item(900010.0, 1.5, 2, 1, 4.0),
    ]) + "\n")
    (data / "order_items" / "order_items-9001-edge.ndjson").write_text(item(900001, 1, 1, 1, 10.0) + "\n")

    def click(eid, session, event_type, ts, customer=None):
        return json.dumps({"event_id": eid, "session_id": session, "customer_id": customer,
                           "product_id": 2, "event_type": event_type, "ts": ts}, separators=(",", ":"))

    (data / "clicks" / "clicks-9000-edge.ndjson").write_text("\n".join([
        # A tie on ts: the smaller session_id wins.
        click("edge-1", "s-b", "view", "2026-01-05T08:00:00Z", c),
        click("edge-1", "s-a", "view", "2026-01-05T08:00:00Z", c),
        # A ts that does not cast to a timestamp: quarantined by silver with its text; its
        # unknown event type still counts as a warn violation (every row is checked).
        click("edge-2", "s-a", "zoom", "not a time"),
        # A NULL ordering value loses (a NULL is not a failed cast).
        click("edge-3", "s-a", "view", None),
        click("edge-3", "s-c", "view", "2026-01-05T08:01:00Z"),
        # A NULL event type violates the warn expectation (counted, kept).
        click("edge-4", "s-a", None, "2026-01-05 08:02:00"),
        # Other timestamp forms Arrow's cast reads: an offset, a date alone; and one it does
        # not (no seconds), quarantined.
        click("edge-5", "s-a", "checkout", "2026-01-05T10:02:00-05:00"),
        click("edge-6", "s-a", "view", "2026-01-05"),
        click("edge-7", "s-a", "view", "2026-01-05 10:03"),
    ]) + "\n")

    # Inventory of the demo's last day again: a duplicate key with more stock (the greatest
    # on_hand wins), a NULL on_hand (dropped: NULL violates `on_hand >= 0`), a new warehouse,
    # and a column the other files do not have (NULL in their rows).
    last = max(Path(p).name for p in glob.glob(str(data / "inventory" / "inventory-0*.parquet")))
    day = pq.read_table(data / "inventory" / last).column("snapshot_date")[0].as_py()
    pq.write_table(pa.table({
        "snapshot_date": pa.array([day] * 3, pa.date32()),
        "product_id": pa.array([1, 2, 3], pa.int64()),
        "warehouse": pa.array(["WH-1", "WH-2", "WH-9"], pa.string()),
        "on_hand": pa.array([100_000, None, 0], pa.int64()),
        "note": pa.array(["recount", None, "new site"], pa.string()),
    }), data / "inventory" / "inventory-9000-edge.parquet")


def write_failing_file(data):
    """Orders with statuses outside the list: `valid_status` (fail) must stop the run and leave
    every table as it was. One of them has no customer, so `has_customer` would drop it anyway:
    Medallion checks `fail` expectations on every row, also rows already set aside."""
    c = pick_customer(data)
    path = data / "orders" / "orders-9100-failing.ndjson"
    path.write_text("\n".join(json.dumps(o) for o in [
        {"order_id": 900100, "customer_id": None, "order_ts": "2026-01-06T09:00:00Z",
         "status": "lost", "channel": "web", "updated_at": "2026-01-06T09:00:00Z"},
        {"order_id": 900101, "customer_id": c, "order_ts": "2026-01-06T09:00:00Z",
         "status": None, "channel": "web", "updated_at": "2026-01-06T09:00:00Z"},
    ]) + "\n")
    return path


class Lake:
    """Medallion's tables: the latest version through DuckDB's delta_scan, earlier ones
    through deltalake's time travel."""

    def __init__(self, lake):
        self.lake = lake
        self.con = duckdb.connect(config={"allow_unsigned_extensions": "true"})
        load_duckdb_delta(self.con)

    def read(self, layer, name, versions):
        """The table as `versions` (table → version) has it; None if it did not exist then."""
        version = versions.get(f"{layer}/{name}")
        if version is None:
            return None
        path = self.lake / layer / name
        if version == latest_version(path):
            return self.con.execute(f"SELECT * FROM delta_scan({lit(str(path))})").to_arrow_table()
        return deltalake.DeltaTable(str(path), version=version).to_pyarrow_table()


# ── comparing ─────────────────────────────────────────────────────────────────────────────────


def normalized(table, columns):
    """Rows as tuples of exactly comparable values: integers (and scale-0 decimals, which is
    how DuckDB hands over a HUGEINT sum) as int, doubles by their bits, decimals as Decimal,
    timestamps as µs since the epoch in UTC, dates as ISO text."""
    out = []
    for c in columns:
        col = table.column(c)
        t = col.type
        if pa.types.is_timestamp(t):
            if t.unit != "us":
                col = col.cast(pa.timestamp("us", tz=t.tz))
            values = [None if v is None else ("ts", v) for v in pc.cast(col, pa.int64()).to_pylist()]
        elif pa.types.is_date(t):
            values = [None if v is None else ("date", v.isoformat()) for v in col.to_pylist()]
        elif pa.types.is_floating(t):
            values = [None if v is None else ("f", float(v).hex()) for v in col.to_pylist()]
        elif pa.types.is_decimal(t):
            values = [
                None if v is None else (("i", int(v)) if t.scale == 0 else ("dec", v.normalize()))
                for v in col.to_pylist()
            ]
        elif pa.types.is_integer(t):
            values = [None if v is None else ("i", v) for v in col.to_pylist()]
        elif pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
            values = [None if v is None else ("s", v) for v in col.to_pylist()]
        elif pa.types.is_boolean(t):
            values = [None if v is None else ("b", v) for v in col.to_pylist()]
        else:
            values = [None if v is None else ("?", repr(v)) for v in col.to_pylist()]
        out.append(values)
    return list(zip(*out)) if out else [()] * table.num_rows


def show(row, columns):
    def value(v):
        if v is None:
            return "NULL"
        kind, x = v
        return str(float.fromhex(x)) + f" ({x})" if kind == "f" else str(x)
    return "{" + ", ".join(f"{c}: {value(v)}" for c, v in zip(columns, row)) + "}"


class Comparison:
    def __init__(self):
        self.failures = []

    def fail(self, what, lines):
        self.failures.append(what)
        print(f"DIFF {what}")
        for line in lines:
            print(f"     {line}")

    def tables(self, what, medallion, reference, ordered=False, columns=None):
        """Row for row: the same columns, and the same multiset of rows (or list, if ordered)."""
        if reference is None:
            if medallion is None or medallion.num_rows == 0:
                print(f"ok   {what}: no table, no rows expected")
                return
            return self.fail(what, [f"the reference has no rows; Medallion has {medallion.num_rows}"])
        if medallion is None:
            if reference.num_rows == 0:
                print(f"ok   {what}: no table, no rows expected")
                return
            return self.fail(what, [f"Medallion has no table; the reference has {reference.num_rows} rows"])
        m_cols = columns or medallion.column_names
        r_cols = columns or reference.column_names
        if sorted(m_cols) != sorted(r_cols) or (ordered and m_cols != r_cols):
            return self.fail(what, [f"columns differ: medallion {m_cols}, reference {r_cols}"])
        m, r = normalized(medallion, m_cols), normalized(reference, m_cols)
        if ordered and m == r:
            print(f"ok   {what}: {len(m)} rows, in order")
            return
        cm, cr = Counter(m), Counter(r)
        if cm == cr:
            if ordered:
                first = next(i for i, (a, b) in enumerate(zip(m, r)) if a != b)
                return self.fail(what, [f"same rows in another order, first difference at row {first}: "
                                        f"medallion {show(m[first], m_cols)}, reference {show(r[first], m_cols)}"])
            print(f"ok   {what}: {len(m)} rows")
            return
        only_m, only_r = cm - cr, cr - cm
        lines = [f"rows: medallion {len(m)}, reference {len(r)}; "
                 f"{sum(only_m.values())} only in Medallion, {sum(only_r.values())} only in the reference"]
        lines += [f"only in Medallion: {show(row, m_cols)}" for row in sorted(only_m, key=repr)[:SHOWN_DIFFERENCES]]
        lines += [f"only in reference: {show(row, m_cols)}" for row in sorted(only_r, key=repr)[:SHOWN_DIFFERENCES]]
        self.fail(what, lines)

    def values(self, what, medallion, reference, shown=None):
        if medallion == reference:
            print(f"ok   {what}: {reference if shown is None else shown}")
        else:
            self.fail(what, [f"medallion {medallion}, reference {reference}"])


def error_kind(message):
    """Medallion's quarantine `_error` / `_quarantine_reason`, as the reference's kinds."""
    for pattern, kind in (
        (r"^invalid JSON", "invalid JSON"),
        (r"^not a JSON object", "not a JSON object"),
        (r"^expected \d+ fields", "field count"),
        (r"^column `(.*)`: cannot read", r"cannot read \1"),
        (r"^column `(.*)`: \S+ is not an integer", r"not an integer \1"),
        (r"^cast of `(.*)` to", r"cast \1"),
        (r"^expectation `(.*)` violated", r"expectation \1"),
    ):
        m = re.match(pattern, message)
        if m:
            return m.expand(kind)
    return "decode"


def bronze_quarantine_table(rows):
    return pa.table({
        "_source_file": pa.array([r["_source_file"] for r in rows], pa.string()),
        "_line": pa.array([r["_line"] for r in rows], pa.int64()),
        "kind": pa.array([r["kind"] for r in rows], pa.string()),
        "_ingested_at": pa.array([r["_ingested_at"] for r in rows], pa.timestamp("us", tz="UTC")),
    })


# ── the test ──────────────────────────────────────────────────────────────────────────────────


def source_files(spec, base):
    """What each bronze table's glob matches, sorted, as Medallion lists them."""
    return {
        name: sorted(str(Path(p).resolve()) for p in glob.glob(str(base / src["path"])))
        for name, src in spec.get("bronze", {}).items()
    }


def ingestion_clock(lake, spec, runs, cmp):
    """(table, file) → `_ingested_at` µs, read from Medallion's bronze tables and quarantines
    and checked: one value per table and run, inside the run's wall-clock window."""
    clock = {}
    for name in spec.get("bronze", {}):
        for n, run in enumerate(runs):
            per_file = {}
            for layer in ("bronze", "quarantine"):
                table = lake.read(layer, name, run["versions"])
                if table is None:
                    continue
                for f, us in zip(table.column("_source_file").to_pylist(),
                                 pc.cast(table.column("_ingested_at"), pa.int64()).to_pylist()):
                    per_file.setdefault(f, set()).add(us)
            times = {us for f, t in per_file.items() if (name, f) not in clock for us in t}
            started, finished = run["window"]
            # The clock is read in milliseconds.
            if len(times) > 1 or not all(started // 1000 * 1000 <= t <= finished for t in times):
                cmp.fail(f"{run['label']}: bronze/{name} _ingested_at",
                         [f"expected one value in [{started}, {finished}] µs, found {sorted(times)}"])
            t = min(times) if times else started
            for f in run["files"][name]:
                clock.setdefault((name, f), t)
    return clock


def build_reference(spec, files, clock):
    return Reference(spec, {name: [(f, clock[(name, f)]) for f in fs] for name, fs in files.items()}).build()


def main():
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    bin_, work = sys.argv[1], Path(sys.argv[2]).resolve()
    began = time.time()
    for sub in ("retail", "lake"):
        shutil.rmtree(work / sub, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    retail, lake_dir, data = work / "retail", work / "lake", work / "retail" / "data"
    demo = ["demo", "--dir", retail, "--lake", lake_dir, "--scale", SCALE, "--engine", "native", "--json"]
    run = ["run", retail / "pipeline.toml", "--lake", lake_dir, "--engine", "native", "--json"]

    # Medallion: three runs, recording what each saw and the version each left of every table.
    runs = []
    for label, prepare, args in (
        ("run 1 (demo, days 1-3)", None, demo),
        ("run 2 (demo --more, day 4)", None, demo + ["--more"]),
        ("run 3 (edge cases, day 5)", write_edge_day, run),
    ):
        if prepare:
            prepare(data)
        status, out, err, window = medallion(bin_, args)
        if status != 0:
            raise SystemExit(f"{label}: medallion failed:\n{err[-3000:]}")
        spec = tomllib.loads((retail / "pipeline.toml").read_text())
        runs.append(dict(label=label, report=json.loads(out), window=window,
                         files=source_files(spec, retail), versions=lake_versions(lake_dir)))
    print(f"medallion: {len(runs)} runs in {time.time() - began:.1f} s")

    lake = Lake(lake_dir)
    cmp = Comparison()
    clock = ingestion_clock(lake, spec, runs, cmp)
    for n, r in enumerate(runs):
        started = time.time()
        try:
            ref = build_reference(spec, r["files"], clock)
        except ReferenceRunFailed as e:
            raise SystemExit(f"{r['label']}: the reference fails ({e}) but Medallion's run succeeded")
        print(f"{r['label']}: reference built in {time.time() - started:.1f} s")
        new_files = {
            name: set(fs) - (set(runs[n - 1]["files"][name]) if n else set()) for name, fs in r["files"].items()
        }
        compare_run(cmp, r["label"], spec, ref, lake, r["versions"], r["report"], new_files)

    # Run 4: a `fail` expectation is violated. Medallion must stop, name the table, the
    # expectation and the count, and leave every table as it was; the reference must predict it.
    label = "run 4 (a `fail` expectation violated)"
    failing = write_failing_file(data)
    status, out, err, window = medallion(bin_, run)
    files = source_files(spec, retail)
    for name, fs in files.items():
        for f in fs:
            clock.setdefault((name, f), window[0])
    try:
        build_reference(spec, files, clock)
        predicted = None
    except ReferenceRunFailed as e:
        predicted = e
    failing.unlink()
    if predicted is None or predicted.expectation is None:
        cmp.fail(label, [f"the reference does not predict the failure: {predicted}"])
    else:
        said = re.search(rf"table `{predicted.table}`: expectation `{predicted.expectation}` failed on (\d+) row", err)
        cmp.values(f"{label}: exit status, table, expectation and count in the error",
                   (status != 0, int(said[1]) if said else err.strip()[-300:]),
                   (True, predicted.violations))
    cmp.values(f"{label}: every table's version unchanged", lake_versions(lake_dir), runs[-1]["versions"],
               shown=f"{len(runs[-1]['versions'])} tables")

    took = time.time() - began
    if cmp.failures:
        raise SystemExit(f"{len(cmp.failures)} differences between Medallion and the reference "
                         f"({took:.1f} s): {'; '.join(cmp.failures)}")
    print(f"every table equal to the reference ({took:.1f} s)")


def compare_run(cmp, label, spec, ref, lake, versions, report, new_files):
    by_table = {t["table"]: t for t in report["tables"]}
    for layer in ("bronze", "silver", "gold"):
        for name in spec.get(layer, {}):
            medallion = lake.read(layer, name, versions)
            if layer == "gold":
                cmp.tables(f"{label}: {layer}/{name}", medallion, ref.gold(name), ordered=True)
            else:
                cmp.tables(f"{label}: {layer}/{name}", medallion, ref.table(name))
            t = by_table.get(name)
            if t is None or t.get("version") is None:
                continue  # not rewritten by this run: its report has no counts to check
            got = {k: t[k] for k in ("rows_in", "rows_out", "dropped", "quarantined", "deduplicated")}
            got["expectations"] = {e["name"]: e["violations"] for e in t["expectations"]}
            if layer == "bronze":
                # The report counts the files this run ingested.
                rows = sum(ref.file_rows[(name, f)] for f in new_files[name])
                bad = sum(1 for r in ref.quarantine[name] if r["_source_file"] in new_files[name])
                want = dict(rows_in=rows + bad, rows_out=rows, dropped=0, quarantined=bad,
                            deduplicated=0, expectations={})
            elif layer == "silver":
                want = ref.counters[name]
                refresh = t.get("refresh") or ""
                moved = re.search(r"new file\(s\) of (\w+)", refresh)
                if refresh.startswith(("append:", "merge:")) and moved and moved[1] in spec.get("bronze", {}):
                    # Incremental: the counts are those of the new files' rows. A merge's rows
                    # out and duplicates depend on which of the table's files held their keys.
                    want = ref.silver_new_rows(name, spec["silver"][name], moved[1], new_files[moved[1]])
                    if refresh.startswith("merge:"):
                        for k in ("rows_out", "deduplicated"):
                            got.pop(k)
                            want.pop(k)
                elif refresh.startswith(("append:", "merge:")):
                    cmp.values(f"{label}: {layer}/{name} refreshed from bronze", refresh, "a bronze input")
                    continue
            else:
                rows = ref.count(name)
                want = dict(rows_in=rows, rows_out=rows, dropped=0, quarantined=0,
                            deduplicated=0, expectations={})
            cmp.values(f"{label}: report of {layer}/{name}", got, want)

    # Quarantines. Bronze: each source file is read once, so the quarantine is every rescued
    # line of every file seen so far, with the clock of the run that read it.
    for name in spec.get("bronze", {}):
        medallion = lake.read("quarantine", name, versions)
        if medallion is not None:
            kinds = pa.array([error_kind(e) for e in medallion.column("_error").to_pylist()], pa.string())
            medallion = medallion.append_column("kind", kinds)
        cols = ["_source_file", "_line", "kind", "_ingested_at"]
        cmp.tables(f"{label}: quarantine/{name}", None if medallion is None else medallion.select(cols),
                   bronze_quarantine_table(ref.quarantine[name]), columns=cols)
        invalid = [r for r in ref.quarantine[name] if r["kind"] == "invalid JSON"]
        if medallion is not None and invalid:
            # Lines that are not JSON are kept as they were (trimmed), for a person to fix.
            got = {(f, n, raw) for f, n, raw, k in zip(*(medallion.column(c).to_pylist() for c in
                   ("_source_file", "_line", "_raw", "kind"))) if k == "invalid JSON"}
            want = {(r["_source_file"], r["_line"], r["raw"]) for r in invalid}
            cmp.values(f"{label}: quarantine/{name} raw text of non-JSON lines",
                       f"{len(got)} lines" if got == want else sorted(got ^ want)[:SHOWN_DIFFERENCES],
                       f"{len(want)} lines")
    # Silver: a rebuild replaces the quarantine with the rows it sets aside (with their values
    # before the casts and the reason), so it holds exactly the rows the latest build set
    # aside: the reference's, whether this run rebuilt the table or not (then the inputs are
    # those of the build that did). Nothing set aside: no quarantine table, or an empty one.
    for name in spec.get("silver", {}):
        medallion = lake.read("quarantine", name, versions)
        want = ref.quarantine[name]
        if medallion is not None:
            reasons = [error_kind(e) for e in medallion.column("_quarantine_reason").to_pylist()]
            medallion = medallion.set_column(
                medallion.column_names.index("_quarantine_reason"), "_quarantine_reason",
                pa.array(reasons, pa.string()))
        cmp.tables(f"{label}: quarantine/{name}", medallion, want)


if __name__ == "__main__":
    main()
