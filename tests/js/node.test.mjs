// The npm package in Node: every query shape and the whole retail pipeline give the native
// CLI's answers, over a real Range server; I/O is what a range reader should do; errors name
// what failed; a trap is reported and recovered from.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { tableFromIPC } from 'apache-arrow';
import { Medallion, MedallionError } from '../../wasm/js/index.js';
import { GOLD, queryCases, runQueryCases, runRetailPipeline } from './cases.mjs';
import { demoFixture, nativeBin, nativeRows, startServer } from './support.mjs';

let server;
let fx;
before(async () => {
  fx = demoFixture();
  server = await startServer();
});
after(() => server?.stop());

test('every query shape gives the native answer', async () => {
  const cases = queryCases(server.base);
  const got = await runQueryCases(Medallion, cases);
  for (const c of cases) {
    assert.equal(got[c.name].error, undefined, `${c.name}: ${got[c.name].error}`);
    const expected = nativeRows(c);
    assert.ok(expected.length > 0, `${c.name}: native returned no rows`);
    assert.deepEqual(got[c.name].rows, expected, c.name);
  }
  // count(*) is answered from the footer: one suffix request, no HEAD.
  assert.equal(got['count over a Parquet file'].stats.requests, 1);
});

test('with pushdownFilters every query shape still gives the native answer', async () => {
  const cases = queryCases(server.base);
  const got = await runQueryCases(Medallion, cases, { pushdownFilters: true });
  for (const c of cases) {
    assert.equal(got[c.name].error, undefined, `${c.name}: ${got[c.name].error}`);
    assert.deepEqual(got[c.name].rows, nativeRows(c), c.name);
  }
});

test('the workers option is ignored in Node (no Web Workers), and a bad value is refused', async () => {
  const cases = queryCases(server.base);
  const got = await runQueryCases(Medallion, cases, { workers: 2 });
  for (const c of cases) {
    assert.equal(got[c.name].error, undefined, `${c.name}: ${got[c.name].error}`);
    assert.deepEqual(got[c.name].rows, nativeRows(c), c.name);
  }
  const m = await Medallion.create({ workers: 'auto' });
  assert.equal(m.workers, 0);
  m.close();
  await assert.rejects(Medallion.create({ workers: -1 }), /workers must be a whole number ≥ 0 or "auto", not -1/);
  await assert.rejects(Medallion.create({ workers: 2, workerSilenceMs: 0 }), /workerSilenceMs must be a number of milliseconds > 0, not 0/);
});

test('results convert to Arrow IPC that apache-arrow reads', async () => {
  const m = await Medallion.create();
  await m.registerDelta('segments', `${server.base}/tests/js/.work/lake/gold/customer_segments`);
  const r = await m.sql('SELECT customer_id, segment, monetary FROM segments ORDER BY customer_id');
  const table = tableFromIPC(r.toIPC());
  const rows = r.toArray();
  assert.equal(table.numRows, r.numRows);
  assert.deepEqual(r.columns, ['customer_id', 'segment', 'monetary']);
  assert.deepEqual(table.schema.fields.map((f) => f.name), r.columns);
  for (const i of [0, Math.floor(rows.length / 2), rows.length - 1]) {
    const row = table.get(i);
    assert.equal(Number(row.customer_id), rows[i].customer_id);
    assert.equal(row.segment, rows[i].segment);
    assert.equal(row.monetary, rows[i].monetary);
  }
});

test('the retail pipeline from URLs builds the native gold tables', async () => {
  const { report, gold, events, files } = await runRetailPipeline(Medallion, server.base, fx.spec, fx.sourceFiles);
  assert.equal(report.ok, true);
  assert.equal(report.tables.length, 15);
  assert.ok(files > 30, `only ${files} files in the in-memory lake`);
  assert.deepEqual(events, ['planned', 'tableStarted', 'fileIngested', 'tableFinished', 'committing']);
  for (const [name, sql] of Object.entries(GOLD)) {
    const expected = nativeRows({ sql, tables: [[name, `${fx.lake}/gold/${name}`, 'delta']] });
    assert.ok(expected.length > 0);
    assert.deepEqual(gold[name], expected, name);
  }
});

test('errors name the URL, the byte range or the table', async () => {
  const m = await Medallion.create({ retries: 1 });
  const missing = `${server.base}/tests/js/.work/nope.parquet`;
  await assert.rejects(m.registerParquet('t', missing), (e) => e instanceof MedallionError && e.message.includes(missing));
  await assert.rejects(m.sql('SELECT * FROM no_such_table'), /no_such_table/);
  const inventory = `${server.base}/tests/js/.work/retail/data/inventory/inventory-0000.parquet`;
  await m.registerParquet('inv', inventory);
  await server.fault('status-500');
  try {
    await assert.rejects(m.sql('SELECT sum(on_hand) FROM inv'), (e) => e.message.includes(inventory) && /HTTP 500 after 2 attempt/.test(e.message) && /bytes \d+-\d+/.test(e.message));
  } finally {
    await server.fault('none');
  }
  await assert.rejects(Medallion.create({ footerHnt: 1 }), /unknown field `footerHnt`/);
  const csv = `${server.base}/tests/js/.work/retail/data/customers.csv`;
  await assert.rejects(m.registerParquet('c', csv), (e) => e.message.includes(csv));
});

test('retries ride out a flaky server; a server that ignores Range still works', async () => {
  const inventory = `${server.base}/tests/js/.work/retail/data/inventory/inventory-0001.parquet`;
  const sql = 'SELECT warehouse, sum(on_hand) AS s FROM inv GROUP BY warehouse ORDER BY warehouse';
  const expected = nativeRows({ sql, tables: [['inv', inventory, 'parquet']] });
  for (const mode of ['flaky', 'ignore-range']) {
    await server.fault(mode);
    try {
      const m = await Medallion.create();
      await m.registerParquet('inv', inventory);
      assert.deepEqual((await m.sql(sql)).toArray(), expected, mode);
    } finally {
      await server.fault('none');
    }
  }
});

test('a trap rejects the call and the next call runs on a fresh instance', async () => {
  const m = await Medallion.create();
  await m.registerParquet('inv', `${server.base}/tests/js/.work/retail/data/inventory/inventory-0000.parquet`);
  const before = (await m.sql('SELECT count(*) AS n FROM inv')).toArray();
  await assert.rejects(m._panicForTests(false), (e) => e.trapped === true && /deliberate panic/.test(e.message));
  // Same object, fresh module instance, tables registered again.
  assert.deepEqual((await m.sql('SELECT count(*) AS n FROM inv')).toArray(), before);
});

test('registerDelta reads earlier versions by number and by time, as the native CLI does', async () => {
  // A lake with two versions of bronze: the demo, then one more day.
  const { execFileSync } = await import('node:child_process');
  const fs = await import('node:fs');
  const root = `${fx.dir}-history`;
  fs.rmSync(root, { recursive: true, force: true });
  const demo = (...more) => execFileSync(nativeBin(),
    ['demo', '--dir', `${root}/retail`, '--lake', `${root}/lake`, '--scale', '0.1', '--engine', 'native', ...more],
    { stdio: 'pipe' });
  demo();
  demo('--more');
  const table = `${root}/lake/bronze/orders_raw`;
  const url = `${server.base}/${table.slice(table.indexOf('tests/js/'))}`;
  const count = 'SELECT count(*) AS n FROM o';
  const native = (at) => nativeRows({ sql: count, tables: [['o', `${table}@${at}`, 'delta']] })[0].n;
  const m = await Medallion.create();
  await m.registerDelta('o', url, { version: 0 });
  const v0 = (await m.sql(count)).toArray()[0].n;
  await m.registerDelta('o', url);
  const latest = (await m.sql(count)).toArray()[0].n;
  assert.equal(v0, native(0));
  assert.ok(latest > v0, `one more day adds orders (${v0} → ${latest})`);
  await m.registerDelta('o', url, { timestamp: '2999-01-01T00:00:00Z' });
  assert.equal((await m.sql(count)).toArray()[0].n, latest);
  await assert.rejects(m.registerDelta('o', url, { timestamp: '2000-01-01T00:00:00Z' }),
    (e) => e instanceof MedallionError && /earliest/.test(e.message));
  await assert.rejects(m.registerDelta('o', url, { version: 99 }),
    (e) => e instanceof MedallionError && /no version 99/.test(e.message));
  await assert.rejects(m.registerDelta('o', url, { versoin: 1 }),
    (e) => e instanceof MedallionError && /unknown option `versoin`/.test(e.message));
});
