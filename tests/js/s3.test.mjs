// Lakes in an S3 bucket from the npm package, against moto's S3 server. In Node (keys, SigV4 by
// aws4fetch), headless Chromium (the page holds no keys: its `sign` callback asks "the app's
// server" — this test — for presigned URLs) and workerd (keys from the worker's environment),
// the retail pipeline reads its sources from the bucket and commits Delta tables to it; the
// native CLI then reads those tables from the bucket and must give the same answers as the
// engine that wrote them, and as the native lake built from the same sources. Also: a listing
// longer than one ListObjectsV2 page, two commits of one version (exactly one wins), and
// errors that say what is wrong.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { Medallion, MedallionError } from '../../wasm/js/index.js';
import { GOLD } from './cases.mjs';
import { REPO, corsProxy, demoFixture, freePort, launchChromium, nativeRows, startMoto, startServer } from './support.mjs';

const BUCKET = 'lake';
const BASE = `s3://${BUCKET}/src`;

let fx;
let moto;
before(async () => {
  fx = demoFixture();
  moto = await startMoto();
  await moto.createBucket(BUCKET);
  await moto.upload(path.join(fx.dir, 'data'), BUCKET, 'src/data');
});
after(() => moto?.stop());

/** Native answers over the bucket's gold tables, and over the native lake of the same sources. */
function checkGold(lake, gold, where) {
  for (const [name, sql] of Object.entries(GOLD)) {
    const fromBucket = nativeRows({ sql, tables: [[name, `${lake}/gold/${name}`, 'delta']] }, moto.env);
    assert.ok(fromBucket.length > 0, `${where}: native read no rows of ${name}`);
    assert.deepEqual(gold[name], fromBucket, `${where}: ${name}, engine vs native over ${lake}`);
    const native = nativeRows({ sql, tables: [[name, `${fx.lake}/gold/${name}`, 'delta']] });
    assert.deepEqual(fromBucket, native, `${where}: ${name}, bucket vs native local lake`);
  }
}

async function goldOf(m) {
  const gold = {};
  for (const [name, sql] of Object.entries(GOLD)) gold[name] = (await m.sql(sql)).toArray();
  return gold;
}

test('Node: the retail pipeline reads its sources from a bucket and commits its tables there', async () => {
  const lake = `s3://${BUCKET}/node`;
  const m = await Medallion.create({ s3: moto.s3 });
  const report = await m.runPipeline(fx.spec, { lake, base: BASE, nowMs: Date.UTC(2026, 0, 5) });
  assert.equal(report.ok, true);
  assert.equal(report.tables.length, 15);
  assert.equal(m.lakeFiles().length, 0, 'nothing was kept in memory');
  const stats = m.stats();
  assert.ok(stats.listRequests > 0 && stats.writeRequests > 30, JSON.stringify(stats));
  checkGold(lake, await goldOf(m), 'Node');

  // Another engine finds the tables by location; a second run over the same sources adds nothing.
  const reader = await Medallion.create({ s3: moto.s3 });
  assert.equal(await reader.register('segments', `${lake}/gold/customer_segments`), 'delta');
  const count = (await reader.sql('SELECT count(*) AS n FROM segments')).toArray();
  assert.deepEqual(count, nativeRows({ sql: 'SELECT count(*) AS n FROM segments', tables: [['segments', `${lake}/gold/customer_segments`, 'delta']] }, moto.env));
  const again = await reader.runPipeline(fx.spec, { lake, base: BASE });
  assert.ok(again.tables.filter((t) => t.layer === 'bronze').every((t) => t.files_ingested === 0), JSON.stringify(again.tables));
  checkGold(lake, await goldOf(reader), 'Node, second run');
});

test('a glob over more keys than one ListObjectsV2 page finds the files on the second page', async () => {
  // 1000 keys sort before the two sources, so these are on the listing's second page.
  const pads = Array.from({ length: 1000 }, (_, i) => `src/many/aa-pad-${String(i).padStart(4, '0')}.txt`);
  for (let i = 0; i < pads.length; i += 25) {
    await Promise.all(pads.slice(i, i + 25).map((k) => moto.request('PUT', `${BUCKET}/${k}`, '')));
  }
  await moto.request('PUT', `${BUCKET}/src/many/part-1.ndjson`, '{"id":1,"v":"a"}\n{"id":2,"v":"b"}\n');
  await moto.request('PUT', `${BUCKET}/src/many/part-2.ndjson`, '{"id":3,"v":"c & d"}\n');
  const spec = '[pipeline]\nname = "paged"\n\n[bronze.events]\npath = "many/part-*.ndjson"\nschema = { id = "bigint", v = "string" }\n';
  const m = await Medallion.create({ s3: moto.s3 });
  const lake = `s3://${BUCKET}/paged`;
  const report = await m.runPipeline(spec, { lake, base: BASE });
  assert.equal(report.tables[0].files_ingested, 2, JSON.stringify(report.tables));
  const sql = 'SELECT id, v FROM events ORDER BY id';
  const rows = (await m.sql(sql)).toArray();
  assert.deepEqual(rows, [{ id: 1, v: 'a' }, { id: 2, v: 'b' }, { id: 3, v: 'c & d' }]);
  assert.deepEqual(nativeRows({ sql, tables: [['events', `${lake}/bronze/events`, 'delta']] }, moto.env), rows);
});

test('two commits of the same table version: exactly one wins, the other is a conflict that changed nothing', async () => {
  await moto.request('PUT', `${BUCKET}/race/src/e.ndjson`, '{"id":1}\n{"id":2}\n{"id":3}\n');
  const spec = '[pipeline]\nname = "race"\n\n[bronze.events]\npath = "e.ndjson"\nschema = { id = "bigint" }\n';
  const lake = `s3://${BUCKET}/race/lake`;
  const commit = /\/race\/lake\/bronze\/events\/_delta_log\/0{20}\.json$/;
  // Both runs stage version 0 and check that the table is still absent; their conditional PUTs
  // of the log entry are held until both have sent one, then go to the store one after the other.
  const realFetch = globalThis.fetch;
  const held = [];
  let releaseAll;
  const bothArrived = new Promise((r) => { releaseAll = r; });
  let chain = Promise.resolve();
  const statuses = [];
  globalThis.fetch = async (input, init) => {
    const url = String(input?.url ?? input);
    const method = init?.method ?? input?.method;
    if (method !== 'PUT' || !commit.test(url)) return realFetch(input, init);
    held.push(url);
    if (held.length === 2) releaseAll();
    await Promise.race([bothArrived, new Promise((r) => setTimeout(r, 20000))]);
    const answer = chain.then(() => realFetch(input, init));
    chain = answer.then((r) => { statuses.push(r.status); }, () => {});
    return answer;
  };
  let results;
  try {
    const engines = await Promise.all([1, 2].map(() => Medallion.create({ s3: moto.s3 })));
    results = await Promise.allSettled(engines.map((m, i) => m.runPipeline(spec, { lake, base: `s3://${BUCKET}/race/src`, runId: `racer-${i}` })));
  } finally {
    globalThis.fetch = realFetch;
  }
  assert.equal(held.length, 2, 'both runs tried to commit version 0');
  assert.deepEqual(statuses.sort(), [200, 412], 'the store took one conditional PUT and refused the other');
  const won = results.filter((r) => r.status === 'fulfilled');
  const lost = results.filter((r) => r.status === 'rejected');
  assert.equal(won.length, 1, JSON.stringify(results.map((r) => r.reason?.message ?? r.status)));
  assert.ok(lost[0].reason instanceof MedallionError);
  assert.match(lost[0].reason.message, /commit conflict on events: version 0 was written by another writer/);
  assert.equal(lost[0].reason.changedNothing, true);
  // One version; the loser's data files were removed; the native CLI reads the winner's rows once.
  const keys = await moto.listKeys(BUCKET, 'race/lake/bronze/events/');
  assert.deepEqual(keys.filter((k) => k.includes('_delta_log/')), ['race/lake/bronze/events/_delta_log/00000000000000000000.json']);
  const log = await (await moto.request('GET', `${BUCKET}/race/lake/bronze/events/_delta_log/00000000000000000000.json`)).text();
  const adds = log.split('\n').filter((l) => l.startsWith('{"add"')).length;
  assert.equal(keys.filter((k) => k.endsWith('.parquet')).length, adds, keys.join('\n'));
  const n = nativeRows({ sql: 'SELECT count(*) AS n FROM e', tables: [['e', `${lake}/bronze/events`, 'delta']] }, moto.env);
  assert.deepEqual(n, [{ n: 3 }]);
});

test('errors say what is wrong: a missing bucket, no s3 option, a bad s3 option, a lake that cannot be written', async () => {
  const m = await Medallion.create({ s3: moto.s3, retries: 0 });
  await assert.rejects(m.registerDelta('t', 's3://no-such-bucket/lake/gold/t'),
    (e) => e instanceof MedallionError && /the bucket `no-such-bucket` does not exist at http:\/\/127\.0\.0\.1:\d+/.test(e.message));
  await assert.rejects(m.registerDelta('t', `s3://${BUCKET}/nowhere/t`), (e) => e.message.includes(`s3://${BUCKET}/nowhere/t`));
  await assert.rejects(m.runPipeline(fx.spec, { lake: 'gs://shop/lake' }), /does not speak `gs:\/\/`/);
  await assert.rejects(m.runPipeline(fx.spec, { lake: 'https://example.invalid/lake' }), /read-only/);
  const plain = await Medallion.create();
  await assert.rejects(plain.registerDelta('t', `s3://${BUCKET}/node/gold/customer_segments`), /need the `s3` option of Medallion\.create/);
  await assert.rejects(plain.runPipeline(fx.spec, { lake: `s3://${BUCKET}/x` }), /need the `s3` option/);
  await assert.rejects(Medallion.create({ s3: { ...moto.s3, bucket: 'x' } }), /s3 option: unknown field `bucket`/);
  await assert.rejects(Medallion.create({ s3: { ...moto.s3, anonymous: true } }), /exactly one way to sign/);
  await assert.rejects(Medallion.create({ s3: { endpoint: moto.endpoint, accessKeyId: 'a', secretAccessKey: 'b' } }), /`region` is required/);
});

test('Chromium: a page that holds no keys signs through its server (presigned URLs) and runs the pipeline into the bucket', async () => {
  const server = await startServer();
  const proxy = await corsProxy(moto.endpoint);
  const browser = await launchChromium();
  try {
    const page = await browser.newPage();
    const pageErrors = [];
    page.on('pageerror', (e) => pageErrors.push(e.message));
    // "The app's server": presigns exactly the request the page describes, for a few minutes.
    const signed = [];
    await page.exposeFunction('presign', (request) => {
      signed.push(request.method);
      return moto.presign(request);
    });
    await page.goto(`${server.base}/tests/js/browser.html`);
    const lake = `s3://${BUCKET}/browser`;
    const out = await page.evaluate(async ({ endpoint, proxied, region, spec, lake, base, gold, keys }) => {
      const { Medallion } = await import('/wasm/js/index.js');
      const m = await Medallion.create({ s3: { endpoint, region, sign: (request) => window.presign(request) } });
      const report = await m.runPipeline(spec, { lake, base });
      const rows = {};
      for (const [name, sql] of Object.entries(gold)) rows[name] = (await m.sql(sql)).toArray();
      // With keys (not what a page should do): aws4fetch comes through the page's import map.
      const withKeys = await Medallion.create({ s3: { endpoint: proxied, region, ...keys } });
      await withKeys.registerDelta('segments', `${lake}/gold/customer_segments`);
      const count = (await withKeys.sql('SELECT count(*) AS n FROM segments')).toArray();
      return { ok: report.ok, tables: report.tables.length, rows, count };
    }, { endpoint: moto.endpoint, proxied: proxy.endpoint, region: moto.keys.region, spec: fx.spec, lake, base: BASE, gold: GOLD, keys: { accessKeyId: moto.keys.accessKeyId, secretAccessKey: moto.keys.secretAccessKey } });
    assert.deepEqual(pageErrors, []);
    assert.equal(out.ok, true);
    assert.equal(out.tables, 15);
    assert.ok(signed.includes('PUT') && signed.includes('GET'), `signed: ${[...new Set(signed)]}`);
    checkGold(lake, out.rows, 'Chromium');
    assert.deepEqual(out.count, [{ n: out.rows.customer_segments.length }]);
  } finally {
    await browser.close();
    await proxy.stop();
    await server.stop();
  }
});

test('workerd: the edge worker, with keys in its environment, runs the pipeline into the bucket and queries it', async () => {
  const port = await freePort();
  const log = [];
  const worker = spawn(process.execPath, [path.join(REPO, 'examples/edge/serve.mjs')], {
    env: { ...process.env, ...moto.env, PORT: String(port) },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  worker.stdout.on('data', (d) => log.push(String(d)));
  worker.stderr.on('data', (d) => log.push(String(d)));
  const base = `http://127.0.0.1:${port}`;
  try {
    for (let i = 0; ; i++) {
      try {
        if ((await fetch(`${base}/`)).ok) break;
      } catch {
        if (i > 300) throw new Error(`workerd did not start:\n${log.join('')}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    const lake = `s3://${BUCKET}/workerd`;
    const run = await fetch(`${base}/pipeline?${new URLSearchParams({ lake, base: BASE })}`, { method: 'POST', body: fx.spec });
    const report = await run.json();
    assert.equal(run.status, 200, `${JSON.stringify(report)}\n${log.join('')}`);
    assert.equal(report.ok, true);
    assert.equal(report.tables.length, 15);
    const gold = {};
    for (const [name, sql] of Object.entries(GOLD)) {
      const params = new URLSearchParams({ sql, table: `${name}=${lake}/gold/${name}` });
      const r = await fetch(`${base}/query?${params}`);
      const body = await r.json();
      assert.equal(r.status, 200, JSON.stringify(body));
      gold[name] = body.rows;
    }
    checkGold(lake, gold, 'workerd');
  } finally {
    worker.kill();
  }
});
