// Queries split across Web Workers (`Medallion.create({ workers })`) in headless Chromium, over
// TPC-H lineitem at SF 0.1 (~20 MB, written by DuckDB in 20,000-row row groups) served with
// Range requests:
//   rows    with 2 and 3 workers every answer is the one-engine answer exactly, and DuckDB's
//           (decimals, as toArray gives them, to 1e-9 relative; averages, a double in DuckDB
//           and a decimal of scale 6 here, to 1e-6)
//   parts   the query says it ran in that many parts; a query with nothing worth splitting
//           (a constant, a point lookup) runs whole, and costs the requests and bytes it costs
//           without workers
//   reads   the page and its workers read the file once between them: at most 1.25x what one
//           engine reads, plus a footer read per engine (a top-k: less than N times)
//   errors  a query failing in the workers fails once, in its own words; the pool goes on
//   delta   a Delta table that gains a version after the page read it still splits: the
//           workers read the page's version (written by deltalake); after the page's module
//           traps and registers the table again, at its latest version, the workers follow
//   views   a view the page made and the workers do not hold: the query runs whole
//   s3      an s3:// table splits as well: the workers read the bucket (moto's S3 server), and
//           the page, which alone can sign (its `sign` callback, or keys), signs their reads
//   silence a worker that stops answering (as one the browser stopped would) ends the pool
//           after workerSilenceMs, and the query under way runs whole with DuckDB's answer
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { queryCases } from './cases.mjs';
import { corsProxy, demoFixture, launchChromium, nativeRows, python, REPO, startMoto, startServer, WORK } from './support.mjs';

const QUERIES = [
  `SELECT l_returnflag, l_linestatus, sum(l_quantity) AS sum_qty, sum(l_extendedprice) AS sum_base_price,
          sum(l_extendedprice * (1 - l_discount)) AS sum_disc_price, avg(l_discount) AS avg_disc, count(*) AS count_order
   FROM lineitem WHERE l_shipdate <= DATE '1998-09-02'
   GROUP BY l_returnflag, l_linestatus ORDER BY l_returnflag, l_linestatus`,
  'SELECT count(*) AS n, min(l_shipdate) AS lo, max(l_comment) AS hi FROM lineitem',
  'SELECT count(DISTINCT l_orderkey) AS orders FROM lineitem WHERE l_discount > 0.05',
  `SELECT l_orderkey, l_linenumber, l_extendedprice FROM lineitem WHERE l_quantity >= 50
   ORDER BY l_extendedprice DESC, l_orderkey, l_linenumber LIMIT 10`,
  `SELECT l_suppkey, sum(l_quantity) AS q FROM lineitem GROUP BY l_suppkey
   HAVING sum(l_quantity) > 3900 ORDER BY q DESC, l_suppkey`,
  `SELECT a.l_shipmode, count(*) AS n FROM lineitem a
   JOIN (SELECT l_orderkey FROM lineitem GROUP BY l_orderkey HAVING count(*) = 7) b ON a.l_orderkey = b.l_orderkey
   GROUP BY a.l_shipmode ORDER BY a.l_shipmode`,
  // A point lookup reads its filter column first, little of the file: it runs whole.
  'SELECT l_orderkey, l_linenumber, l_comment FROM lineitem WHERE l_orderkey = 4242 ORDER BY l_linenumber',
  'SELECT 42 AS answer',
];
// Asked after a failing query, of the same engine.
const AFTER_ERROR = 'SELECT count(*) AS n, sum(l_quantity) AS q FROM lineitem WHERE l_quantity > 10';
const FOOTER_READ = 256 * 1024;

let server;
let browser;
let page;
let answers;
let fileUrl;
let file;
let moto;
before(async () => {
  demoFixture(); // makes WORK, which the server serves
  file = path.join(WORK, 'lineitem-sf0.1.parquet');
  answers = JSON.parse(
    execFileSync(python(), [path.join(REPO, 'tests/js/duckdb_answers.py'), file], {
      input: JSON.stringify([...QUERIES, AFTER_ERROR]),
      encoding: 'utf8',
      maxBuffer: 64 << 20,
    }),
  );
  server = await startServer();
  fileUrl = `${server.base}/${path.relative(REPO, file)}`;
  browser = await launchChromium();
  page = await (await browser.newContext()).newPage();
  await page.goto(`${server.base}/tests/js/browser.html`);
});
after(async () => {
  await browser?.close();
  await server?.stop();
  moto?.stop();
});

// Each query on a fresh engine without a cache, so that bytes count what a query reads.
async function runAll(workers) {
  return page.evaluate(
    async ([queries, url, workers]) => {
      const { Medallion } = await import('/wasm/js/index.js');
      const out = [];
      for (const sql of queries) {
        const m = await Medallion.create({ workers, cacheBytes: 0 });
        await m.registerParquet('lineitem', url);
        m.resetStats();
        try {
          const r = await m.sql(sql);
          const { bytes, requests } = m.stats();
          out.push({ rows: r.toArray(), parts: r.parts, bytes, requests, workers: m.workers });
        } catch (e) {
          out.push({ error: String(e.message ?? e) });
        }
        m.close();
      }
      return out;
    },
    [QUERIES, fileUrl, workers],
  );
}

// Decimals arrive as numbers (1e-9 relative); an average of decimals is a decimal of scale 6
// here and a double in DuckDB, so it agrees to 1e-6.
function close(key, a, b) {
  if (typeof a === 'number' && typeof b === 'number') {
    const tolerance = key.startsWith('avg') ? 1e-6 : 1e-9 * Math.max(1, Math.abs(b));
    return Math.abs(a - b) <= tolerance;
  }
  return a === b;
}

function sameRows(got, want) {
  return (
    got.length === want.length &&
    got.every((g, i) => Object.keys(want[i]).length === Object.keys(g).length && Object.entries(want[i]).every(([k, v]) => close(k, g[k], v)))
  );
}

test('queries split across 2 and 3 Web Workers give the one-engine answers and DuckDB\'s, reading the file once', async () => {
  const whole = await runAll(0);
  for (const [i, r] of whole.entries()) {
    assert.equal(r.error, undefined, `${QUERIES[i]}: ${r.error}`);
    assert.ok(sameRows(r.rows, answers[i]), `one engine vs DuckDB: ${QUERIES[i]}\n${JSON.stringify(r.rows.slice(0, 3))}\n${JSON.stringify(answers[i].slice(0, 3))}`);
    assert.equal(r.parts, 1);
  }
  for (const workers of [2, 3]) {
    const split = await runAll(workers);
    for (const [i, r] of split.entries()) {
      const sql = QUERIES[i];
      assert.equal(r.error, undefined, `${workers} workers: ${sql}: ${r.error}`);
      assert.equal(r.workers, workers);
      assert.deepEqual(r.rows, whole[i].rows, `${workers} workers vs one engine: ${sql}`);
      assert.ok(sameRows(r.rows, answers[i]), `${workers} workers vs DuckDB: ${sql}`);
      const scans = sql.includes('FROM lineitem') && !sql.includes('l_orderkey = 4242');
      assert.equal(r.parts, scans ? workers : 1, `${workers} workers: parts of ${sql}`);
      if (!scans) {
        // Planned once, for the page, as without workers.
        assert.deepEqual([r.requests, r.bytes], [whole[i].requests, whole[i].bytes], `${workers} workers: requests and bytes of ${sql}`);
        continue;
      }
      const bound = sql.includes('LIMIT') ? workers * whole[i].bytes : 1.25 * whole[i].bytes + (workers + 1) * FOOTER_READ;
      assert.ok(r.bytes < bound, `${workers} workers read ${r.bytes} bytes where one engine read ${whole[i].bytes}: ${sql}`);
    }
  }
});

test('a failing query fails once in its own words, and the workers take the next one', async () => {
  const out = await page.evaluate(async ([url, after]) => {
    const { Medallion } = await import('/wasm/js/index.js');
    const m = await Medallion.create({ workers: 2 });
    await m.registerParquet('lineitem', url);
    let message = 'no error';
    try {
      await m.sql('SELECT CAST(l_comment AS INT) AS c FROM lineitem');
    } catch (e) {
      message = `${e.name}: ${e.message}`;
    }
    const next = await m.sql(after);
    return { message, workers: m.workers, next: next.toArray(), parts: next.parts };
  }, [fileUrl, AFTER_ERROR]);
  assert.match(out.message, /^MedallionError: .*Cannot cast string/);
  assert.equal(out.message.match(/Cannot cast string/g).length, 1, out.message);
  assert.equal(out.workers, 2);
  assert.equal(out.parts, 2);
  assert.ok(sameRows(out.next, answers[QUERIES.length]), `${JSON.stringify(out.next)} vs DuckDB's ${JSON.stringify(answers[QUERIES.length])}`);
});

test('a Delta table that moves on after the page read it still splits: the workers read the page\'s version', async () => {
  const dir = path.join(WORK, 'lineitem-delta');
  fs.rmSync(dir, { recursive: true, force: true });
  const write = (mode, rows) =>
    execFileSync(python(), ['-c', `import sys, deltalake, pyarrow.parquet as pq
t = pq.read_table(sys.argv[1])
rows = int(sys.argv[4])
deltalake.write_deltalake(sys.argv[2], t.slice(0, rows) if rows else t, mode=sys.argv[3])`, file, dir, mode, String(rows)]);
  write('overwrite', 0);
  const url = `${server.base}/${path.relative(REPO, dir)}`;
  const version = await page.evaluate(async (url) => {
    const { Medallion } = await import('/wasm/js/index.js');
    window.deltaEngine = await Medallion.create({ workers: 2 });
    return window.deltaEngine.registerDelta('lineitem', url);
  }, url);
  assert.equal(version, 'delta');
  write('append', 1000);
  const out = await page.evaluate(async ([url, q1, count]) => {
    const m = window.deltaEngine;
    const r = await m.sql(q1);
    await m.registerDelta('now', url);
    const now = await m.sql(count.replace('FROM lineitem', 'FROM now'));
    // A fresh module instance on the page registers `lineitem` again: at version 1 now.
    const trapped = await m._panicForTests(false).then(() => false, (e) => e.trapped === true);
    const again = await m.sql('SELECT count(*) AS n FROM lineitem WHERE l_quantity > 0');
    m.close();
    return {
      rows: r.toArray(), parts: r.parts, now: now.toArray()[0].n, trapped,
      again: again.toArray()[0].n, againParts: again.parts, workers: m.workers,
    };
  }, [url, QUERIES[0], QUERIES[1]]);
  assert.ok(sameRows(out.rows, answers[0]), `version 0 vs DuckDB over the file: ${JSON.stringify(out.rows.slice(0, 2))}`);
  assert.equal(out.parts, 2);
  assert.equal(out.now, answers[1][0].n + 1000);
  assert.equal(out.trapped, true);
  assert.deepEqual([out.again, out.againParts], [answers[1][0].n + 1000, 2]);
});

test('a view or table only the page holds runs whole, with the answer', async () => {
  const out = await page.evaluate(async ([url, q1, heavy]) => {
    const { Medallion } = await import('/wasm/js/index.js');
    const m = await Medallion.create({ workers: 2 });
    await m.registerParquet('lineitem', url);
    await m.sql("CREATE VIEW shipped AS SELECT * FROM lineitem WHERE l_shipdate <= DATE '1998-09-02'");
    const r = await m.sql('SELECT count(*) AS n FROM shipped');
    const q = await m.sql(q1);
    // Made by the page's engine alone (DataFusion runs it when it plans it: once).
    await m.sql('CREATE TABLE heavy AS SELECT l_quantity FROM lineitem WHERE l_quantity > 10');
    const h = await m.sql(heavy.replace('FROM lineitem WHERE l_quantity > 10', 'FROM heavy'));
    return { n: r.toArray()[0].n, parts: r.parts, workers: m.workers, q1Parts: q.parts, heavy: h.toArray() };
  }, [fileUrl, QUERIES[0], AFTER_ERROR]);
  // Q1 counts the same rows, by group.
  assert.equal(out.n, answers[0].reduce((sum, row) => sum + row.count_order, 0));
  assert.equal(out.parts, 1);
  assert.equal(out.workers, 2);
  assert.equal(out.q1Parts, 2);
  assert.ok(sameRows(out.heavy, answers[QUERIES.length]), `${JSON.stringify(out.heavy)} vs DuckDB's ${JSON.stringify(answers[QUERIES.length])}`);
});

test('an s3:// table splits too: the workers read the bucket, the page signs their reads', { timeout: 120_000 }, async () => {
  moto = await startMoto();
  await moto.createBucket('tpch');
  await moto.request('PUT', 'tpch/lineitem.parquet', fs.readFileSync(file));
  const signed = [];
  await page.exposeFunction('presignForWorkersTest', (request) => {
    signed.push(request.method);
    return moto.presign(request);
  });
  const proxy = await corsProxy(moto.endpoint);
  let out;
  try {
    out = await page.evaluate(async ([endpoint, proxied, keys, queries]) => {
      const { Medallion } = await import('/wasm/js/index.js');
      const run = async (s3) => {
        const m = await Medallion.create({ workers: 2, cacheBytes: 0, s3 });
        await m.registerParquet('lineitem', 's3://tpch/lineitem.parquet');
        const out = [];
        for (const sql of queries) {
          const r = await m.sql(sql);
          out.push({ rows: r.toArray(), parts: r.parts, workers: m.workers });
        }
        m.close();
        return out;
      };
      const { region } = keys;
      return {
        sign: await run({ endpoint, region, sign: (request) => window.presignForWorkersTest(request) }),
        // With keys (not what a page should do; through a proxy that answers CORS preflights).
        keys: await run({ endpoint: proxied, ...keys }),
      };
    }, [moto.endpoint, proxy.endpoint, moto.keys, QUERIES.slice(0, 3)]);
  } finally {
    await proxy.stop();
  }
  for (const way of ['sign', 'keys']) {
    for (const [i, r] of out[way].entries()) {
      assert.ok(sameRows(r.rows, answers[i]), `s3 (${way}), 2 workers vs DuckDB: ${QUERIES[i]}\n${JSON.stringify(r.rows.slice(0, 3))}`);
      assert.deepEqual([r.parts, r.workers], [2, 2], `${way}: ${QUERIES[i]}`);
    }
  }
  // The page's footer read, and the workers' reads of their parts, all signed by the page.
  assert.ok(signed.filter((m) => m === 'GET').length > 3, `signed: ${signed}`);
});

test('with workers, every query shape (small files, Delta tables: run whole) gives the native answer', async () => {
  const cases = queryCases(server.base);
  const got = await page.evaluate(async (base) => {
    const c = await import('/tests/js/cases.mjs');
    const { Medallion } = await import('/wasm/js/index.js');
    return c.runQueryCases(Medallion, c.queryCases(base), { workers: 2 });
  }, server.base);
  for (const c of cases) {
    assert.equal(got[c.name].error, undefined, `${c.name}: ${got[c.name].error}`);
    assert.deepEqual(got[c.name].rows, nativeRows(c), c.name);
  }
});

test('a worker that goes silent ends the pool, and the query under way runs whole', { timeout: 120_000 }, async () => {
  const out = await page.evaluate(async ([url, sql]) => {
    const { Medallion } = await import('/wasm/js/index.js');
    const warnings = [];
    const warn = console.warn;
    console.warn = (message) => warnings.push(String(message));
    // The first worker asked for a part hears nothing more, pings included, and so says
    // nothing: what a worker the browser stopped without an error event looks like.
    const post = Worker.prototype.postMessage;
    let stopped = null;
    Worker.prototype.postMessage = function (message, transfer) {
      if (message?.call === 'part') stopped ??= this;
      if (this !== stopped) post.call(this, message, transfer);
    };
    try {
      const m = await Medallion.create({ workers: 2, workerSilenceMs: 1500 });
      await m.registerParquet('lineitem', url);
      const started = performance.now();
      const r = await m.sql(sql);
      const ms = performance.now() - started;
      const next = await m.sql(sql);
      return { rows: r.toArray(), parts: r.parts, ms, workers: m.workers, nextParts: next.parts, warnings };
    } finally {
      Worker.prototype.postMessage = post;
      console.warn = warn;
    }
  }, [fileUrl, QUERIES[0]]);
  assert.ok(sameRows(out.rows, answers[0]), `${JSON.stringify(out.rows)} vs DuckDB's ${JSON.stringify(answers[0])}`);
  assert.equal(out.parts, 1);
  assert.equal(out.workers, 0);
  assert.equal(out.nextParts, 1);
  assert.ok(out.ms >= 1500, `the query gave up on the worker after ${out.ms} ms`);
  assert.equal(out.warnings.length, 1, out.warnings.join('\n'));
  assert.match(out.warnings[0], /^Medallion: worker \d sent nothing for \d+\.\d s while it owed an answer \(workerSilenceMs: 1500\); queries run whole on the page from now on$/);
});
