#!/usr/bin/env node
// Browser benchmark: Medallion's npm package and DuckDB-WASM 1.28 side by side in headless
// Chromium, querying TPC-H lineitem over HTTP Range requests (`npm run bench:browser`).
//
//   node tests/bench/browser.mjs [--sf 1] [--latencies 0,20] [--queries count,point,q6,q1]
//                                [--engines medallion,duckdb-wasm] [--repeat 1] [--timeout-s 300]
//                                [--medallion-options JSON] [--cache-control VALUE]
//
// What one run does, per latency: start tests/rangeserve.py on the repository root with
// `--latency-ms L --no-store` (a sleep before answering each request, and no browser caching, so
// what is counted is what the engine asks for); then per engine × query (× repeat), in a fresh
// browser context: load tests/bench/pages/<engine>.html, start the engine (`init_ms`, not part of
// cold), zero the server's counters, run the query (`cold`: register the table by URL — footer
// read — then the query, result to JS objects), read the counters, run it again in the same page
// (`warm`, table already registered), read the counters. Times are performance.now() in the page.
// Every answer is reduced to a check number (Q1 Σ sum_charge, Q6 Σ revenue, point
// Σ l_extendedprice, count the count) and compared with native DuckDB over the local file
// (relative 1e-6, same row count): `ok`. `--medallion-options` is passed to Medallion.create()
// (e.g. '{"cacheBytes":0,"footerHint":524288}' measures without the range cache, with the old
// footer read). `ratio` = Medallion cold / DuckDB-WASM cold (target for
// Q1 and Q6: <= 0.15). Medallion's start-up (fetch + compile + instantiate of its module) is also
// measured in a page of its own, taken apart, and the module's raw and gzipped size is printed.
// `peak_MiB`: the peak resident memory (VmHWM) of the renderer process of the run's page (a fresh
// context gets its own; found through the browser's CDP `SystemInfo.getProcessInfo`).
// `--cache-control 'max-age=300'` makes the server send that header instead of `no-store`: a
// freshness lifetime, which Medallion's range cache honours (warm runs then ask nothing) and the
// browser's HTTP cache may too (each cold run still starts in a fresh context, so empty).
//
// Output: a table on stdout and a JSON record in ~/.cache/medallion/bench/browser-<timestamp>.json.
// Needs: `npm run build` (wasm/pkg/), the venv with duckdb (tests/js/support.mjs python()),
// ~/.cache/medallion/bench/tpch-sf<SF>/lineitem.parquet (tests/bench/remote_parquet.py makes it),
// and Debian's chromium. DuckDB-WASM 1.28.0 is npm-installed on first use into
// ~/.cache/medallion/bench/npm; it and the data are hard-linked into tests/bench/.data/ (git-ignored)
// so the one server root serves the package, the pages, DuckDB-WASM and the data.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import zlib from 'node:zlib';
import { launchChromium, python, REPO, startServer } from '../js/support.mjs';

const BENCH_CACHE = path.join(os.homedir(), '.cache/medallion/bench');
const DATA_LINKS = path.join(REPO, 'tests/bench/.data');
const NPM_PREFIX = path.join(BENCH_CACHE, 'npm');
const DUCKDB_WASM = 'duckdb-wasm-1.28@npm:@duckdb/duckdb-wasm@1.28.0';
const MODULE = path.join(REPO, 'wasm/pkg/medallion_wasm_bg.wasm');
const ENGINES = {
  medallion: { page: 'medallion.html', label: 'medallion' },
  'duckdb-wasm': { page: 'duckdb.html', label: 'duckdb-wasm-1.28' },
};
const TARGET_RATIO = 0.15;
const TARGET_QUERIES = ['q1', 'q6'];

// The same SQL text as tests/bench/remote_parquet.py (the native benchmark).
const QUERIES = {
  count: 'SELECT count(*) FROM lineitem',
  point: 'SELECT * FROM lineitem WHERE l_orderkey = 4242',
  q1: `SELECT l_returnflag, l_linestatus,
       sum(l_quantity) AS sum_qty,
       sum(l_extendedprice) AS sum_base_price,
       sum(l_extendedprice * (1 - l_discount)) AS sum_disc_price,
       sum(l_extendedprice * (1 - l_discount) * (1 + l_tax)) AS sum_charge,
       avg(l_quantity) AS avg_qty,
       avg(l_extendedprice) AS avg_price,
       avg(l_discount) AS avg_disc,
       count(*) AS count_order
FROM lineitem
WHERE l_shipdate <= DATE '1998-09-02'
GROUP BY l_returnflag, l_linestatus
ORDER BY l_returnflag, l_linestatus`,
  q6: `SELECT sum(l_extendedprice * l_discount) AS revenue
FROM lineitem
WHERE l_shipdate >= DATE '1994-01-01'
  AND l_shipdate < DATE '1995-01-01'
  AND l_discount BETWEEN 0.05 AND 0.07
  AND l_quantity < 24`,
};

// ---------------------------------------------------------------------------------------------
// Options

// The comment at the top of this file.
const HELP = fs.readFileSync(fileURLToPath(import.meta.url), 'utf8').split('\n').slice(1)
  .filter((l, i, all) => all.slice(0, i + 1).every((x) => x.startsWith('//')))
  .map((l) => l.replace(/^\/\/ ?/, '')).join('\n');

function parseOptions(argv) {
  const o = { sf: '1', latencies: '0,20', queries: 'count,point,q6,q1', engines: 'medallion,duckdb-wasm', repeat: '1', 'timeout-s': '300', 'medallion-options': '{}', 'cache-control': '' };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--help' || a === '-h') {
      console.log(HELP);
      process.exit(0);
    }
    const m = /^--([\w-]+)(?:=(.*))?$/.exec(a);
    if (!m || !(m[1] in o)) usage(`unknown option ${a}`);
    const value = m[2] ?? argv[++i];
    if (value === undefined) usage(`${a} needs a value`);
    o[m[1]] = value;
  }
  const list = (s) => s.split(',').map((x) => x.trim()).filter(Boolean);
  const opts = {
    sf: o.sf,
    latencies: list(o.latencies).map(Number),
    queries: list(o.queries),
    engines: list(o.engines),
    repeat: Number(o.repeat),
    timeoutMs: Number(o['timeout-s']) * 1000,
    cacheControl: o['cache-control'] || null,
    medallionOptions: (() => {
      try {
        return JSON.parse(o['medallion-options']);
      } catch (e) {
        return usage(`bad --medallion-options: ${e.message}`);
      }
    })(),
  };
  if (opts.latencies.some((l) => !(l >= 0))) usage(`bad --latencies ${o.latencies}`);
  for (const q of opts.queries) if (!QUERIES[q]) usage(`unknown query ${q} (one of ${Object.keys(QUERIES).join(', ')})`);
  for (const e of opts.engines) if (!ENGINES[e]) usage(`unknown engine ${e} (one of ${Object.keys(ENGINES).join(', ')})`);
  if (!(opts.repeat >= 1)) usage(`bad --repeat ${o.repeat}`);
  return opts;
}

function usage(message) {
  console.error(`${message}\n\n${HELP}`);
  process.exit(2);
}

const log = (s) => console.error(s);

// ---------------------------------------------------------------------------------------------
// What the server root must hold: the data and DuckDB-WASM, linked into tests/bench/.data/

/** Hard-links (else copies) `from` to `to` unless `to` is already that file. */
function linkFile(from, to) {
  const a = fs.statSync(from);
  const b = fs.existsSync(to) ? fs.statSync(to) : null;
  if (b && b.ino === a.ino && b.dev === a.dev) return;
  fs.mkdirSync(path.dirname(to), { recursive: true });
  fs.rmSync(to, { force: true });
  try {
    fs.linkSync(from, to);
  } catch {
    fs.copyFileSync(from, to);
  }
}

function linkTree(from, to) {
  for (const e of fs.readdirSync(from, { withFileTypes: true })) {
    const src = path.join(from, e.name);
    if (e.isDirectory()) linkTree(src, path.join(to, e.name));
    else if (e.isFile()) linkFile(src, path.join(to, e.name));
  }
}

/** The lineitem file at this scale factor, and its URL path under the server root. */
function prepareData(sf) {
  const file = path.join(BENCH_CACHE, `tpch-sf${sf}`, 'lineitem.parquet');
  if (!fs.existsSync(file)) {
    throw new Error(`no ${file}: generate it with \`${python()} tests/bench/remote_parquet.py --sf ${sf} --latencies 0 --repeat 1\``);
  }
  linkFile(file, path.join(DATA_LINKS, `tpch-sf${sf}`, 'lineitem.parquet'));
  return { file, urlPath: `/tests/bench/.data/tpch-sf${sf}/lineitem.parquet`, size: fs.statSync(file).size };
}

/** DuckDB-WASM 1.28.0 and its apache-arrow, npm-installed once, linked under the server root. */
function prepareDuckdbWasm() {
  const pkg = path.join(NPM_PREFIX, 'node_modules/duckdb-wasm-1.28/package.json');
  if (!fs.existsSync(pkg)) {
    log(`installing ${DUCKDB_WASM} into ${NPM_PREFIX}`);
    fs.mkdirSync(NPM_PREFIX, { recursive: true });
    execFileSync('npm', ['install', '--prefix', NPM_PREFIX, '--no-audit', '--no-fund', DUCKDB_WASM], { stdio: 'inherit' });
  }
  const modules = path.join(NPM_PREFIX, 'node_modules');
  for (const dir of ['duckdb-wasm-1.28', 'apache-arrow', 'tslib', 'flatbuffers']) {
    linkTree(path.join(modules, dir), path.join(DATA_LINKS, 'npm/node_modules', dir));
  }
  const version = (dir) => JSON.parse(fs.readFileSync(path.join(modules, dir, 'package.json'), 'utf8')).version;
  return { 'duckdb-wasm': `@duckdb/duckdb-wasm ${version('duckdb-wasm-1.28')}`, 'apache-arrow': version('apache-arrow') };
}

// ---------------------------------------------------------------------------------------------
// Check numbers from native DuckDB over the local file

const CHECK_SQL = `
import json, sys
import duckdb
job = json.load(sys.stdin)
column = {"q1": "sum_charge", "q6": "revenue", "point": "l_extendedprice"}
con = duckdb.connect()
out = {"duckdb": duckdb.__version__, "checks": {}}
for qid, sql in job["queries"].items():
    cur = con.execute(sql.replace("FROM lineitem", "FROM read_parquet('%s') AS lineitem" % job["file"]))
    names = [d[0] for d in cur.description]
    rows = cur.fetchall()
    i = names.index(column[qid]) if qid in column else 0
    out["checks"][qid] = {"rows": len(rows), "check": float(sum(float(r[i]) for r in rows))}
print(json.dumps(out))
`;

function nativeChecks(file, queryIds) {
  const queries = Object.fromEntries(queryIds.map((q) => [q, QUERIES[q]]));
  const out = execFileSync(python(), ['-c', CHECK_SQL], { input: JSON.stringify({ file, queries }), encoding: 'utf8' });
  return JSON.parse(out);
}

const matches = (got, ref) => got.rows === ref.rows && Math.abs(got.check - ref.check) <= 1e-6 * Math.max(1, Math.abs(ref.check));

// ---------------------------------------------------------------------------------------------
// Measuring in the browser

function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timeout after ${ms / 1000} s: ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** The server's counters since the last call (zeroed), for the .parquet requests. */
async function takeIo(server) {
  const s = await server.stats(true);
  const parquet = s.log.filter((e) => e[1].split('?')[0].endsWith('.parquet'));
  const gets = parquet.filter((e) => e[0] === 'GET').map((e) => e[4]).sort((a, b) => a - b);
  return {
    requests: parquet.length,
    heads: parquet.length - gets.length,
    bytes: parquet.reduce((n, e) => n + e[4], 0),
    getMedian: gets.length ? gets[gets.length >> 1] : 0,
    getMax: gets.length ? gets[gets.length - 1] : 0,
    other: s.log.length - parquet.length,
  };
}

/** Chromium's renderer processes now, by process id (from the browser's CDP session). */
async function rendererPids(cdp) {
  const { processInfo } = await cdp.send('SystemInfo.getProcessInfo');
  return new Set(processInfo.filter((p) => p.type === 'renderer').map((p) => p.id));
}

/** The peak resident memory (MiB, `VmHWM`) of processes, summed; undefined if none is readable. */
function peakRssMib(pids) {
  let kb;
  for (const pid of pids) {
    const status = fs.readFileSync(`/proc/${pid}/status`, { encoding: 'utf8', flag: 'r' });
    const m = /^VmHWM:\s+(\d+) kB/m.exec(status);
    if (m) kb = (kb ?? 0) + Number(m[1]);
  }
  return kb === undefined ? undefined : kb / 1024;
}

/** A fresh context and page of `engine`, with page errors collected. */
async function openPage(browser, server, engine) {
  const context = await browser.newContext();
  const page = await context.newPage();
  const pageErrors = [];
  page.on('pageerror', (e) => pageErrors.push(e.message));
  page.on('console', (m) => { if (m.type() === 'error') pageErrors.push(m.text()); });
  await page.goto(`${server.base}/tests/bench/pages/${ENGINES[engine].page}`);
  await page.waitForFunction(() => window.bench, null, { timeout: 60000 });
  return { context, page, pageErrors };
}

/** One cold + warm measurement of `queryId` on `engine`, in a fresh browser context. */
async function measure(browser, cdp, server, engine, queryId, data, timeoutMs, createOptions) {
  // DuckDB-WASM reads the file it registered as 'lineitem.parquet'; Medallion the table 'lineitem'.
  const sql = engine === 'duckdb-wasm'
    ? QUERIES[queryId].replace('FROM lineitem', "FROM read_parquet('lineitem.parquet') AS lineitem")
    : QUERIES[queryId];
  const tables = { lineitem: `${server.base}${data.urlPath}` };
  const row = { engine, query: queryId };
  const before = await rendererPids(cdp);
  const { context, page, pageErrors } = await openPage(browser, server, engine);
  // A fresh context gets its own renderer process (DuckDB-WASM's worker runs inside it too):
  // its high-water mark at the end is the page's peak memory, Chromium's own share included.
  const renderers = [...await rendererPids(cdp)].filter((pid) => !before.has(pid));
  try {
    const init = await withTimeout(page.evaluate((o) => window.bench.init(o), createOptions), 120000, `${engine} init`);
    Object.assign(row, { init_ms: init.initMs, version: init.version });
    if (init.createMs !== undefined) Object.assign(row, { import_ms: init.importMs, create_ms: init.createMs });
    row.init_io = await takeIo(server);
    for (const phase of ['cold', 'warm']) {
      const r = await withTimeout(
        page.evaluate(([id, s, t]) => window.bench.run(id, s, t), [queryId, sql, phase === 'cold' ? tables : null]),
        timeoutMs, `${engine} ${queryId} ${phase}`);
      row[`${phase}_io`] = await takeIo(server);
      if (r.error) {
        row.error = `${phase}: ${r.error}${r.trapped ? ' [module trapped]' : ''}`;
        break;
      }
      Object.assign(row, { [`${phase}_ms`]: r.ms, rows: r.rows, check: r.check });
      if (phase === 'cold') row.register_ms = r.registerMs;
      if (r.engineStats) row[`${phase}_engine_stats`] = r.engineStats;
      if (r.overlap) row[`${phase}_overlap`] = r.overlap;
    }
  } catch (e) {
    row.error = String(e.message ?? e).split('\n')[0];
    await server.stats(true).catch(() => {});
  } finally {
    if (pageErrors.length) row.page_errors = pageErrors.slice(0, 10);
    try {
      row.peak_rss_mib = peakRssMib(renderers);
    } catch {
      // The renderer exited (a crashed page): its error is in the row already.
    }
    await context.close().catch(() => {});
  }
  return row;
}

/** Medallion's start-up taken apart, in a fresh context: fetch, compile, instantiate. */
async function measureStartup(browser, server) {
  const { context, page, pageErrors } = await openPage(browser, server, 'medallion');
  try {
    return await withTimeout(page.evaluate(() => window.bench.startup()), 120000, 'medallion startup');
  } catch (e) {
    return { error: String(e.message ?? e).split('\n')[0], page_errors: pageErrors };
  } finally {
    await context.close().catch(() => {});
  }
}

// ---------------------------------------------------------------------------------------------
// Aggregation and output

const median = (xs) => {
  const v = xs.filter((x) => typeof x === 'number').sort((a, b) => a - b);
  if (!v.length) return undefined;
  const mid = v.length >> 1;
  return v.length % 2 ? v[mid] : (v[mid - 1] + v[mid]) / 2;
};

/** One row from the repeats of a measurement: medians of the numbers, the first error. */
function combine(runs) {
  const first = runs[0];
  const row = { engine: first.engine, query: first.query, version: runs.find((r) => r.version)?.version, runs: runs.length };
  for (const k of ['init_ms', 'import_ms', 'create_ms', 'register_ms', 'cold_ms', 'warm_ms', 'rows', 'check', 'peak_rss_mib']) {
    const m = median(runs.map((r) => r[k]));
    if (m !== undefined) row[k] = m;
  }
  for (const k of ['cold_io', 'warm_io']) {
    const ios = runs.map((r) => r[k]).filter(Boolean);
    if (ios.length) row[k] = Object.fromEntries(Object.keys(ios[0]).map((f) => [f, median(ios.map((io) => io[f]))]));
  }
  for (const k of ['cold_engine_stats', 'warm_engine_stats', 'cold_overlap', 'warm_overlap']) if (first[k]) row[k] = first[k];
  const failed = runs.find((r) => r.error);
  if (failed) row.error = failed.error;
  if (failed?.page_errors) row.page_errors = failed.page_errors;
  row.samples = runs;
  return row;
}

const fmtMs = (v) => (v == null ? '' : v >= 100 ? v.toFixed(0) : v.toFixed(1));
const fmtMB = (v) => (v == null ? '' : (v / 1e6).toFixed(1));

function renderTable(rows) {
  const cols = [
    ['lat', (r) => `${r.latency_ms}ms`], ['engine', (r) => ENGINES[r.engine].label], ['query', (r) => r.query],
    ['init_ms', (r) => fmtMs(r.init_ms)], ['cold_ms', (r) => fmtMs(r.cold_ms)], ['warm_ms', (r) => fmtMs(r.warm_ms)],
    ['rows', (r) => r.rows ?? ''], ['requests', (r) => r.cold_io?.requests ?? ''], ['MB', (r) => fmtMB(r.cold_io?.bytes)],
    ['w_req', (r) => r.warm_io?.requests ?? ''], ['w_MB', (r) => fmtMB(r.warm_io?.bytes)],
    ['peak_MiB', (r) => (r.peak_rss_mib == null ? '' : r.peak_rss_mib.toFixed(0))],
    ['ok', (r) => (r.ok === undefined ? '' : r.ok ? 'y' : 'NO')],
    ['ratio', (r) => (r.ratio === undefined ? '' : `${r.ratio.toFixed(3)}x`)],
    ['note', (r) => (r.error ? `ERROR ${r.error}` : '')],
  ];
  const cells = [cols.map((c) => c[0]), ...rows.map((r) => cols.map((c) => String(c[1](r))))];
  const width = cols.map((_, i) => Math.max(...cells.map((r) => r[i].length)));
  const left = new Set([0, 1, 2, cols.length - 1]);
  return cells.map((r) => r.map((c, i) => (left.has(i) ? c.padEnd(width[i]) : c.padStart(width[i]))).join('  ').trimEnd()).join('\n');
}

/** Size of the module now, and when it was written (to notice a rebuild during the run). */
function moduleSize() {
  if (!fs.existsSync(MODULE)) return null;
  const bytes = fs.readFileSync(MODULE);
  return { raw: bytes.length, gzip: zlib.gzipSync(bytes, { level: 9 }).length, mtime: fs.statSync(MODULE).mtime.toISOString() };
}

// ---------------------------------------------------------------------------------------------
// Main

async function main() {
  const opts = parseOptions(process.argv.slice(2));
  const started = Date.now();
  if (opts.engines.includes('medallion') && !fs.existsSync(MODULE)) {
    throw new Error(`no ${path.relative(REPO, MODULE)}: run \`npm run build\` first`);
  }
  const size = moduleSize();
  const loadavgAtStart = os.loadavg();
  const data = prepareData(opts.sf);
  const versions = {};
  if (opts.engines.includes('duckdb-wasm')) Object.assign(versions, prepareDuckdbWasm());
  log(`native DuckDB check numbers for sf${opts.sf} (${(data.size / 1e6).toFixed(1)} MB)`);
  const native = nativeChecks(data.file, opts.queries);
  versions.duckdb_native = native.duckdb;

  const browser = await launchChromium();
  const cdp = await browser.newBrowserCDPSession();
  versions.chromium = browser.version();
  log(`browser bench: sf${opts.sf}, latencies ${opts.latencies.join(',')} ms, engines ${opts.engines.join(',')}, queries ${opts.queries.join(',')}, repeat ${opts.repeat}, Chromium ${versions.chromium}`);
  const results = [];
  const startup = [];
  try {
    for (const latency of opts.latencies) {
      const server = await startServer({ latencyMs: latency, noStore: !opts.cacheControl, cacheControl: opts.cacheControl, root: REPO });
      try {
        if (opts.engines.includes('medallion')) {
          const runs = [];
          for (let i = 0; i < opts.repeat; i++) runs.push(await measureStartup(browser, server));
          const s = { latency_ms: latency, runs };
          for (const k of ['fetchMs', 'compileMs', 'instantiateMs', 'totalMs']) s[k] = median(runs.map((r) => r[k]));
          s.error = runs.find((r) => r.error)?.error;
          startup.push(s);
          log(`  ${latency}ms medallion start-up: ${s.error ? `ERROR ${s.error}` : `fetch ${fmtMs(s.fetchMs)} + compile ${fmtMs(s.compileMs)} + instantiate ${fmtMs(s.instantiateMs)} = ${fmtMs(s.totalMs)} ms`}`);
        }
        for (const engine of opts.engines) {
          for (const queryId of opts.queries) {
            const runs = [];
            for (let i = 0; i < opts.repeat; i++) {
              const r = await measure(browser, cdp, server, engine, queryId, data, opts.timeoutMs, opts.medallionOptions);
              runs.push(r);
              log(`  ${latency}ms ${engine} ${queryId}: ${r.error ? `ERROR ${r.error}` : `init ${fmtMs(r.init_ms)} ms, cold ${fmtMs(r.cold_ms)} ms, warm ${fmtMs(r.warm_ms)} ms, ${r.cold_io.requests} req, ${fmtMB(r.cold_io.bytes)} MB`}` +
                (r.cold_overlap ? ` (cold: at most ${r.cold_overlap.peakInFlight} in flight, network busy ${fmtMs(r.cold_overlap.networkBusyMs)} ms)` : ''));
            }
            const row = combine(runs);
            row.latency_ms = latency;
            if (row.version) versions[engine] = row.version;
            results.push(row);
          }
        }
      } finally {
        await server.stop();
      }
    }
  } finally {
    await browser.close();
  }

  for (const r of results) {
    const ref = native.checks[r.query];
    if (r.check !== undefined && !r.error) r.ok = matches(r, ref);
    if (r.engine !== 'medallion') continue;
    const peer = results.find((p) => p.engine === 'duckdb-wasm' && p.query === r.query && p.latency_ms === r.latency_ms);
    if (r.cold_ms !== undefined && peer?.cold_ms) r.ratio = r.cold_ms / peer.cold_ms;
  }
  const targets = [];
  for (const latency of opts.latencies) {
    for (const q of TARGET_QUERIES) {
      const r = results.find((x) => x.engine === 'medallion' && x.query === q && x.latency_ms === latency);
      if (!r || r.ratio === undefined) continue;
      targets.push({ latency_ms: latency, query: q, ratio: r.ratio, met: r.ratio <= TARGET_RATIO && r.ok === true });
    }
  }
  const sizeAfter = moduleSize();
  const rebuilt = size && (!sizeAfter || sizeAfter.mtime !== size.mtime);

  console.log(`\nTPC-H SF${opts.sf} lineitem over HTTP (${(data.size / 1e6).toFixed(1)} MB), headless Chromium ${versions.chromium}, ` +
    `fresh context per engine x query${opts.repeat > 1 ? `, medians of ${opts.repeat}` : ''}; cold = register + query, ` +
    'requests/MB = cold run (server-side); peak_MiB = the page\'s renderer process at its peak (VmHWM, Chromium\'s own share included); ' +
    'ratio = medallion cold / duckdb-wasm cold\n');
  if (Object.keys(opts.medallionOptions).length) console.log(`Medallion.create(${JSON.stringify(opts.medallionOptions)})\n`);
  console.log(renderTable(results));
  if (targets.length) {
    console.log(`\ntarget: medallion cold <= ${TARGET_RATIO}x duckdb-wasm cold on ${TARGET_QUERIES.join(', ')}`);
    for (const t of targets) console.log(`  ${t.latency_ms}ms ${t.query}: ${t.ratio.toFixed(3)}x ${t.met ? 'met' : 'NOT met'}`);
  }
  for (const s of startup) {
    console.log(`medallion start-up at ${s.latency_ms}ms: ${s.error ? `ERROR ${s.error}` : `fetch ${fmtMs(s.fetchMs)} + compile ${fmtMs(s.compileMs)} + instantiate ${fmtMs(s.instantiateMs)} = ${fmtMs(s.totalMs)} ms`}`);
  }
  if (size) console.log(`module wasm/pkg/medallion_wasm_bg.wasm: ${(size.raw / 1e6).toFixed(2)} MB raw, ${(size.gzip / 1e6).toFixed(2)} MB gzipped (built ${size.mtime})`);
  if (rebuilt) console.log('WARNING: the module was rebuilt during this run; its numbers may mix two builds');
  console.log(`versions: ${Object.entries(versions).map(([k, v]) => `${k}: ${v}`).join('; ')}`);

  const stamp = new Date().toISOString().replace(/[:.]/g, '-').replace(/-\d{3}Z$/, 'Z');
  const outFile = path.join(BENCH_CACHE, `browser-${stamp}.json`);
  const record = {
    meta: {
      benchmark: 'browser', started: new Date(started).toISOString(), total_s: (Date.now() - started) / 1000,
      sf: Number(opts.sf), latencies_ms: opts.latencies, repeat: opts.repeat, engines: opts.engines, medallion_options: opts.medallionOptions, cache_control: opts.cacheControl ?? 'no-store',
      queries: Object.fromEntries(opts.queries.map((q) => [q, QUERIES[q]])),
      file: { path: data.file, size: data.size }, native_checks: native.checks, versions, module_size: size, module_rebuilt_during_run: !!rebuilt,
      host: { cpus: os.cpus().length, cpu: os.cpus()[0]?.model, mem_gb: Math.round(os.totalmem() / 2 ** 30), loadavg_start: loadavgAtStart, loadavg_end: os.loadavg() },
    },
    startup, results, targets,
  };
  fs.mkdirSync(BENCH_CACHE, { recursive: true });
  fs.writeFileSync(outFile, JSON.stringify(record, null, 1));
  console.log(`wrote ${outFile}`);
}

main().catch((e) => {
  console.error(e.stack ?? e);
  process.exit(1);
});
