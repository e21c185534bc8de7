// The npm package in real headless Chromium (Debian's /usr/bin/chromium driven by
// playwright-core): the page imports the package from the same Range server that serves the
// data, runs every query shape and the retail pipeline, and must match the native CLI.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { GOLD, queryCases } from './cases.mjs';
import { demoFixture, launchChromium, nativeRows, startServer } from './support.mjs';

let server;
let fx;
let browser;
let page;
const pageErrors = [];
before(async () => {
  fx = demoFixture();
  server = await startServer();
  browser = await launchChromium();
  const context = await browser.newContext();
  page = await context.newPage();
  page.on('pageerror', (e) => pageErrors.push(e.message));
  await page.goto(`${server.base}/tests/js/browser.html`);
});
after(async () => {
  await browser?.close();
  await server?.stop();
});

// Runs `fn(exports of cases.mjs, Medallion, arg)` inside the page.
async function inPage(fn, arg) {
  return page.evaluate(async ([src, arg]) => {
    const cases = await import('/tests/js/cases.mjs');
    const { Medallion } = await import('/wasm/js/index.js');
    const f = (0, eval)(`(${src})`);
    return f(cases, Medallion, arg);
  }, [fn.toString(), arg]);
}

test('every query shape gives the native answer in Chromium', async () => {
  const cases = queryCases(server.base);
  const got = await inPage((c, Medallion, base) => c.runQueryCases(Medallion, c.queryCases(base)), server.base);
  for (const c of cases) {
    assert.equal(got[c.name].error, undefined, `${c.name}: ${got[c.name].error}`);
    assert.deepEqual(got[c.name].rows, nativeRows(c), c.name);
  }
  assert.equal(got['count over a Parquet file'].stats.requests, 1);
});

test('the retail pipeline from URLs builds the native gold tables in Chromium', async () => {
  const { report, gold } = await inPage(
    (c, Medallion, { base, spec, files }) => c.runRetailPipeline(Medallion, base, spec, files),
    { base: server.base, spec: fx.spec, files: fx.sourceFiles },
  );
  assert.equal(report.ok, true);
  for (const [name, sql] of Object.entries(GOLD)) {
    assert.deepEqual(gold[name], nativeRows({ sql, tables: [[name, `${fx.lake}/gold/${name}`, 'delta']] }), name);
  }
});

test('an error reaches the page as an Error naming the URL', async () => {
  const url = `${server.base}/tests/js/.work/missing.parquet`;
  const message = await inPage(async (c, Medallion, url) => {
    const m = await Medallion.create();
    try {
      await m.registerParquet('t', url);
      return 'no error';
    } catch (e) {
      return `${e.name}: ${e.message}`;
    }
  }, url);
  assert.match(message, /^MedallionError: /);
  assert.ok(message.includes(url), message);
});

test('a panic inside a future rejects the pending call instead of hanging, then recovers', async () => {
  const out = await inPage(async (c, Medallion, url) => {
    const m = await Medallion.create();
    await m.registerParquet('inv', url);
    const before = (await m.sql('SELECT count(*) AS n FROM inv')).toArray();
    let error;
    await Promise.race([
      m._panicForTests(true).catch((e) => { error = { trapped: e.trapped, message: e.message }; }),
      new Promise((r) => setTimeout(r, 10000)),
    ]);
    const after = (await m.sql('SELECT count(*) AS n FROM inv')).toArray();
    return { before, after, error };
  }, `${server.base}/tests/js/.work/retail/data/inventory/inventory-0000.parquet`);
  assert.ok(out.error, 'the call neither resolved nor rejected within 10 s');
  assert.equal(out.error.trapped, true);
  assert.match(out.error.message, /deliberate panic inside a future/);
  assert.deepEqual(out.after, out.before);
});
