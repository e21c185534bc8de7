"""Medallion against apache/parquet-testing: every file read right, every bad file refused cleanly.

Usage:
  python3 tests/conformance.py MEDALLION_BIN PARQUET_TESTING_DIR [--http]
                               [--known-failures FILE] [--json OUT]

parquet-testing is the corpus other Parquet implementations test against: every encoding,
compression codec, page layout and logical type writers have produced, plus files that
crashed readers. Running Medallion over all of it finds unsupported features and, worse,
panics, hangs and runaway allocations on hostile input, before users do.

For each file this runs `medallion inspect LOC --json`, `medallion query` with
`SELECT count(*)` and `SELECT * ... --format csv` (LOC is the local path or, with --http, a URL
on a rangeserve.py this script starts on the corpus), and checks:
  data/*.parquet       num_rows from inspect and count(*) equal pyarrow's footer row count, and
                       SELECT * exits 0. If pyarrow cannot read the file, there is no count to
                       compare: Medallion may read it (arrow-rs reads some such files on
                       purpose) or refuse it with a short error.
  *.encrypted, files under an encrypt*/aes* folder
                       every command exits non-zero and says "encrypt" on stderr (Medallion
                       does not decrypt Parquet).
  bad_data/*.parquet   SELECT * exits non-zero with a short error on stderr; inspect, which
                       reads only the footer, may succeed but must not panic or hang.
Everywhere: no panic, no hang (60 s), and each command runs under a 4 GB address-space limit
so a file that makes Medallion allocate without bound fails instead of taking the machine.

Files listed in --known-failures (paths relative to the corpus, one a line, `# reason`) are
reported `known` when they fail and `fixed` when they pass; neither fails the run.
"""

import argparse
import contextlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote, unquote

import pyarrow.parquet as pq

TIMEOUT_SECONDS = 60
ADDRESS_SPACE_LIMIT = 4_000_000_000
PANIC_MARKERS = ("panicked", "RUST_BACKTRACE")
# "One-line-ish": a message and its chain of causes, not a dump of a Thrift struct or a page.
MAX_ERROR_LINES = 10
MAX_ERROR_CHARS = 2000
KEPT_OUTPUT_CHARS = 4000
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


def pyarrow_rows(path):
    """(row count from the footer, None) or (None, pyarrow's error)."""
    try:
        return pq.ParquetFile(path).metadata.num_rows, None
    except Exception as e:  # whatever pyarrow raises, it cannot read the file
        return None, f"{type(e).__name__}: {e}"


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


# running Medallion


class Run:
    """One Medallion command on the file at `loc`, and what came of it."""

    def __init__(self, step, argv, loc, keep_stdout=True):
        self.step, self.argv, self.loc = step, argv, loc
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


def run_all(binary, loc, steps):
    """The steps, in order. SELECT * output is discarded: a corpus file can hold gigabytes."""
    # In-process engine: the address-space limit above guards the native reader's allocations;
    # the wasmtime guest reserves its linear memory's address space up front (and has its own
    # memory cap, tested in tests/guest.rs), so it cannot start under such a limit.
    argvs = {
        "inspect": [binary, "inspect", loc, "--json"],
        "count": [binary, "query", COUNT_SQL, "--table", f"t={loc}", "--format", "json",
                  "--engine", "native"],
        "select": [binary, "query", SELECT_SQL, "--table", f"t={loc}", "--format", "csv",
                   "--engine", "native"],
    }
    return [Run(step, argvs[step], loc, keep_stdout=step != "select") for step in steps]


# judging the runs: each judge returns what is wrong with one run, or None


def rows_reported(run):
    """The row count a successful inspect or count run printed, or raise ValueError."""
    out = json.loads(run.stdout)
    return out["num_rows"] if run.step == "inspect" else out[0]["n"]


def problem_reading(run, expected):
    if run.rc != 0:
        return run.said()
    if run.step == "select":
        return None
    try:
        got = rows_reported(run)
    except (ValueError, KeyError, IndexError, TypeError) as e:
        return f"unexpected output ({e}): {run.stdout[:200]!r}"
    return None if got == expected else f"{got} rows, expected {expected}"


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


def judge_for(kind, step, expected):
    # `inspect` reads only the footer: damage inside pages is invisible to it, so for bad
    # files it must merely not panic or hang; the query that reads the pages must refuse.
    if kind == "bad" and step == "inspect":
        return problem_tolerating
    return {
        "data": lambda run: problem_reading(run, expected),
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
    counts = [f"{run.step} {rows_or_none(run)}" for run in runs
              if run.rc == 0 and run.step != "select"]
    return ", ".join(counts) if counts else runs[0].said()


def rows_or_none(run):
    try:
        return rows_reported(run)
    except (ValueError, KeyError, IndexError, TypeError):
        return None


def check(binary, corpus, rel, kind, loc):
    """Run Medallion on one file; returns its result record (status still unjudged by lists)."""
    expected, pyarrow_error = pyarrow_rows(corpus / rel)
    if kind == "data" and expected is None:
        kind = "pyarrow-unreadable"
    steps = ("inspect", "select") if kind == "bad" else ("inspect", "count", "select")
    runs = run_all(binary, loc, steps)
    problems = [(run.step, p) for run in runs
                if (p := run.trouble() or judge_for(kind, run.step, expected)(run))]
    return {"file": str(rel), "kind": kind, "expected_rows": expected,
            "pyarrow_error": pyarrow_error, "passed": not problems,
            "said": one_line(runs, problems),
            "problems": [f"{step}: {p}" for step, p in problems],
            "runs": [run.record() for run in runs]}


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
    print(f"conformance ({mode}): {parts} of {len(results)} files in {seconds:.0f} s")
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
