// The edge example (examples/edge) in workerd, the open-source Cloudflare Workers runtime from
// npm: started on a free port, asked every query shape over HTTP and the retail gold tables by
// name, and must answer as the native CLI does.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { GOLD, queryCases } from './cases.mjs';
import { REPO, demoFixture, freePort, nativeRows, startServer } from './support.mjs';

let server;
let fx;
let worker;
let workerBase;
const log = [];

before(async () => {
  fx = demoFixture();
  server = await startServer();
  const port = await freePort();
  worker = spawn(process.execPath, [path.join(REPO, 'examples/edge/serve.mjs')], {
    env: { ...process.env, PORT: String(port), LAKE_URL: `${server.base}/tests/js/.work/lake` },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  worker.stdout.on('data', (d) => log.push(String(d)));
  worker.stderr.on('data', (d) => log.push(String(d)));
  workerBase = `http://127.0.0.1:${port}`;
  for (let i = 0; i < 300; i++) {
    try {
      if ((await fetch(`${workerBase}/`)).ok) return;
    } catch {
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  throw new Error(`workerd did not start:\n${log.join('')}`);
});
after(async () => {
  worker?.kill();
  await server?.stop();
});

async function get(pathAndQuery) {
  const r = await fetch(`${workerBase}${pathAndQuery}`);
  const body = await r.json();
  return { status: r.status, body };
}

test('every query shape gives the native answer in workerd', async () => {
  for (const c of queryCases(server.base)) {
    const params = new URLSearchParams({ sql: c.sql });
    for (const [name, url] of c.tables) params.append('table', `${name}=${url}`);
    const { status, body } = await get(`/query?${params}`);
    assert.equal(status, 200, `${c.name}: ${JSON.stringify(body)}\n${log.join('')}`);
    assert.deepEqual(body.rows, nativeRows(c), c.name);
    assert.ok(body.stats.requests >= 1 && body.stats.bytes > 0, JSON.stringify(body.stats));
  }
});

test('the gold endpoints serve the retail lake', async () => {
  for (const [name, sql] of Object.entries(GOLD)) {
    const { status, body } = await get(`/gold/${name}`);
    assert.equal(status, 200, JSON.stringify(body));
    assert.deepEqual(body.rows, nativeRows({ sql, tables: [[name, `${fx.lake}/gold/${name}`, 'delta']] }), name);
  }
});

test('bad requests get JSON errors that say what is wrong', async () => {
  const missing = `${server.base}/tests/js/.work/missing.parquet`;
  let { status, body } = await get(`/query?sql=${encodeURIComponent('SELECT 1')}&table=${encodeURIComponent(`t=${missing}`)}`);
  assert.equal(status, 422);
  assert.ok(body.error.includes(missing), body.error);
  ({ status, body } = await get('/query'));
  assert.equal(status, 400);
  ({ status, body } = await get('/gold/nope'));
  assert.equal(status, 404);
  assert.match(body.error, /sales_by_region_day/);
});
