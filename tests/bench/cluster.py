"""Benchmark: the retail pipeline locally vs on a Ballista cluster (1 and 2 executors on this
machine), beside DuckDB running the same SQL.

  local       `medallion run --engine native` (one process, all cores)
  cluster 1   `medallion run --cluster`: a scheduler and one executor (`medallion cluster …`),
              fresh processes for the mode; silver and gold SQL run as Ballista jobs, the
              executors write gold's data files; bronze, silver's checks and writes, and every
              commit in the client
  cluster 2   the same with two executors
  duckdb      the spec's SQL in DuckDB (tests/bench/guest.py's `duckdb_pipeline`), in its own
              process, every table written to Parquet

Each run builds a fresh lake from the same sources (the first build of every table). Printed:
median wall time per mode, its ratio to local and to DuckDB, and peak RSS per process (the
client's from wait4, the scheduler's and executors' VmHWM from /proc at the end of the mode),
plus the machine: cores, memory, load average before and after.

On one machine no speed-up is expected from the cluster: the executors share its cores, and
silver's results cross Arrow Flight to the client, which writes them. The figures show the
cluster's overhead.

Usage: ~/.cache/medallion/venv/bin/python tests/bench/cluster.py --bin BIN [--scale 3] [--repeat 3]
BIN must be built with `--features cluster`. Data is cached under ~/.cache/medallion/bench.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from guest import retail_data, timed  # noqa: E402


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_measured(cmd):
    """Wall ms, peak RSS (MiB) and stdout of one process, which must succeed."""
    ms, p = timed(cmd)
    return ms, p.usage.rss_mib, p.stdout


def vm_hwm_mib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Cluster:
    def __init__(self, bin_, executors, work):
        self.procs = []
        port = free_port()
        self.url = f"df://127.0.0.1:{port}"
        self.scheduler = self._start(bin_, ["cluster", "scheduler", "--port", port], work / "scheduler.log")
        self.executors = [
            self._start(bin_, ["cluster", "executor", "--scheduler", f"127.0.0.1:{port}",
                               "--port", free_port(), "--grpc-port", free_port(),
                               "--work-dir", work / f"executor{i}"], work / f"executor{i}.log")
            for i in range(executors)
        ]
        deadline = time.time() + 90
        while True:
            p = subprocess.run([bin_, "query", "SELECT 1", "--cluster", self.url],
                               capture_output=True, text=True, timeout=60)
            if p.returncode == 0:
                break
            if time.time() > deadline:
                raise RuntimeError(f"cluster {self.url} not ready: {p.stderr[-1000:]}")
            time.sleep(0.5)

    def _start(self, bin_, args, log_path):
        p = subprocess.Popen([str(bin_), *map(str, args)], stdout=open(log_path, "w"),
                             stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(p)
        return p

    def peaks(self):
        return {"scheduler": vm_hwm_mib(self.scheduler.pid),
                **{f"executor {i + 1}": vm_hwm_mib(e.pid) for i, e in enumerate(self.executors)}}

    def stop(self):
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def pipeline_runs(bin_, spec, repeat, extra):
    times, rss, gold = [], [], None
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as tmp:
            ms, peak, out = run_measured([bin_, "run", spec, "--lake", Path(tmp) / "lake", "--json", *extra])
            report = json.loads(out)
            gold = {t["table"]: t["rows_out"] for t in report["tables"] if t["layer"] == "gold"}
            times.append(ms)
            rss.append(peak)
    return statistics.median(times), max(rss), gold


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", required=True, help="medallion built with --features cluster")
    ap.add_argument("--scale", type=float, default=3.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--data", default=str(Path.home() / ".cache/medallion/bench"))
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    bin_ = Path(args.bin)
    root = Path(args.data)
    root.mkdir(parents=True, exist_ok=True)
    data = retail_data(bin_, args.scale, root)
    spec = data / "pipeline.toml"
    source_bytes = sum(f.stat().st_size for f in (data / "data").rglob("*") if f.is_file())
    load_before = os.getloadavg()
    results = []  # (mode, median ms, {process: peak MiB}, gold rows)

    log(f"local, scale {args.scale:g} ({source_bytes / 2**20:.0f} MiB of sources)")
    pipeline_runs(bin_, spec, 1, ["--engine", "native"])  # page cache
    ms, rss, gold = pipeline_runs(bin_, spec, args.repeat, ["--engine", "native"])
    results.append(("local (native)", ms, {"client": rss}, gold))

    for n in (1, 2):
        log(f"cluster, {n} executor(s)")
        with tempfile.TemporaryDirectory() as work:
            cluster = Cluster(bin_, n, Path(work))
            try:
                ms, rss, g = pipeline_runs(bin_, spec, args.repeat, ["--cluster", cluster.url])
                results.append((f"cluster, {n} executor{'s' if n > 1 else ''}", ms,
                                {"client": rss, **cluster.peaks()}, g))
            finally:
                cluster.stop()
        if g != gold:
            log(f"WARNING: gold row counts differ from local: {g} vs {gold}")

    log("duckdb")
    code = ("import sys, json; sys.path.insert(0, %r); from guest import duckdb_pipeline; "
            "ms, gold, _ = duckdb_pipeline(%r); print(json.dumps([ms, gold]))") % (str(HERE), str(spec))
    times, rss = [], []
    for _ in range(args.repeat):
        _, peak, out = run_measured([sys.executable, "-c", code])
        ms, dgold = json.loads(out)
        times.append(ms)
        rss.append(peak)
    results.append(("duckdb", statistics.median(times), {"python+duckdb": max(rss)}, dgold))
    load_after = os.getloadavg()

    local_ms = results[0][1]
    duck_ms = results[-1][1]
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    print(f"retail scale {args.scale:g}: {source_bytes / 2**20:.0f} MiB of sources; "
          f"{os.cpu_count()} cores, {mem:.0f} GiB; load average {load_before[0]:.2f} before, "
          f"{load_after[0]:.2f} after; median of {args.repeat}")
    print(f"{'mode':<22} {'median s':>9} {'÷ local':>8} {'÷ duckdb':>9}  peak RSS MiB per process")
    for mode, ms, peaks, _ in results:
        peak_text = ", ".join(f"{k} {v:.0f}" for k, v in peaks.items())
        print(f"{mode:<22} {ms / 1000:>9.2f} {ms / local_ms:>7.2f}x {ms / duck_ms:>8.2f}x  {peak_text}")
    if args.json:
        Path(args.json).write_text(json.dumps({"scale": args.scale, "source_bytes": source_bytes,
                                               "load": [load_before, load_after],
                                               "results": results}, indent=1))


if __name__ == "__main__":
    main()
