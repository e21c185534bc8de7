#!/usr/bin/env node
// Warm queries over Delta tables by URL: the npm package in Node, the demo lake's multi-file
// bronze tables served by tests/rangeserve.py with `--latency-ms L --no-store`.
//
//   node tests/bench/delta_warm.mjs [--latencies 0,20] [--repeat 5] [--pkg other/wasm/js/index.js]
//
// Per latency × table: register the table (its log is read), run the query once (cold: every
// data file fetched), then `--repeat` times more in the same engine (warm); report the median
// warm time, the requests and HEADs of the last warm run (as `stats()` counts them), and check
// the answer against deltalake's. `--pkg` runs another build of the package beside this one
// (e.g. a checkout of an earlier commit after its `npm run build`): the peer is the same engine
// before a change. DuckDB-WASM is not a peer here: its Delta extension is not available offline.
//
// Needs: `npm run build`, the debug CLI (the lake is made by tests/js/support.mjs demoFixture())
// and the venv with deltalake.
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { demoFixture, python, REPO, startServer } from '../js/support.mjs';

const { values: opts } = parseArgs({
  options: {
    latencies: { type: 'string', default: '0,20' },
    repeat: { type: 'string', default: '5' },
    pkg: { type: 'string' },
  },
});
const TABLES = [['bronze/orders_raw', 'order_id'], ['bronze/order_items_raw', 'product_id'], ['bronze/clicks_raw', 'session_id']];
const REFERENCE = `
import json, os, sys, deltalake, pyarrow.compute as pc
t = deltalake.DeltaTable(sys.argv[1])
col = t.to_pyarrow_table(columns=[sys.argv[2]])[sys.argv[2]]
print(json.dumps({"n": pc.count_distinct(col).as_py(), "files": len(t.file_uris())}), flush=True)
os._exit(0)  # pyarrow's thread pool can abort at interpreter exit after its work is done
`;

const builds = [['this build', path.join(REPO, 'wasm/js/index.js')]];
if (opts.pkg) builds.push([opts.pkg, path.resolve(opts.pkg)]);
const { lake } = demoFixture();
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const rows = [];
for (const latency of opts.latencies.split(',').map(Number)) {
  const server = await startServer({ latencyMs: latency, noStore: true });
  try {
    for (const [table, col] of TABLES) {
      const dir = path.join(lake, table);
      const ref = JSON.parse(execFileSync(python(), ['-c', REFERENCE, dir, col], { encoding: 'utf8' }));
      const url = `${server.base}/${path.relative(REPO, dir)}`;
      const sql = `SELECT count(DISTINCT ${col}) AS n FROM t`;
      for (const [build, entry] of builds) {
        const { Medallion } = await import(entry);
        const m = await Medallion.create();
        await m.registerDelta('t', url);
        const answers = [];
        const t0 = performance.now();
        answers.push((await m.sql(sql)).toArray()[0].n);
        const coldMs = performance.now() - t0;
        const warm = [];
        for (let i = 0; i < Number(opts.repeat); i++) {
          m.resetStats();
          const s = performance.now();
          answers.push((await m.sql(sql)).toArray()[0].n);
          warm.push(performance.now() - s);
        }
        const st = m.stats();
        rows.push({
          latency_ms: latency, table, files: ref.files, build, cold_ms: +coldMs.toFixed(1),
          warm_ms: +median(warm).toFixed(1), warm_requests: st.requests, warm_heads: st.revalidations,
          ok: answers.every((n) => n === ref.n),
        });
      }
    }
  } finally {
    await server.stop();
  }
}
const load = execFileSync('cat', ['/proc/loadavg'], { encoding: 'utf8' }).split(' ').slice(0, 3).join(' ');
console.log(`warm Delta queries, medians of ${opts.repeat}; load ${load}`);
console.table(rows);
if (rows.some((r) => !r.ok)) {
  console.error('an answer differs from deltalake\'s');
  process.exit(1);
}
