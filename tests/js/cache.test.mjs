// The npm package's range cache, in Node over a real Range server (tests/rangeserve.py, strong
// ETags) whose file is rewritten under the engine: a query run again sends one HEAD and no
// GET (none while the server's Cache-Control: max-age lasts); a file with a new ETag is read again, never answered from memory; hits and bytes are
// counted as the server saw them; the byte cap holds; 0 turns the cache off; a Delta table
// queried again sends no request at all (its data files are never rewritten). The Parquet files
// are written by DuckDB, whose own answers over them are the reference.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { Medallion } from '../../wasm/js/index.js';
import { demoFixture, python, REPO, startServer, WORK } from './support.mjs';

const DIR = path.join(WORK, 'cache');
const SQL = 'SELECT count(*) AS n, sum(v) AS sv, sum(length(s)) AS ls, min(k) AS lo, max(k) AS hi FROM t';

// Two versions of one table, of different sizes and contents, and DuckDB's answer for each.
const WRITE = `
import json, sys, duckdb
out = {}
for name, rows, mul in (("v1", 200000, 7), ("v2", 150000, 11)):
    path = sys.argv[1] + "/" + name + ".parquet"
    duckdb.execute(f"""COPY (SELECT i AS k, (i * {mul}) % 1000 AS v, 'name-' || (i % 977) AS s
                          FROM range({rows}) t(i))
                       TO '{path}' (FORMAT parquet, ROW_GROUP_SIZE 20000)""")
    n, sv, ls, lo, hi = duckdb.execute(f"""SELECT count(*), sum(v), sum(length(s)), min(k), max(k)
                                           FROM read_parquet('{path}')""").fetchone()
    out[name] = {"n": n, "sv": int(sv), "ls": int(ls), "lo": lo, "hi": hi}
print(json.dumps(out))
`;

// deltalake's answer over a Delta table, and how many data files it has.
const DELTA_REFERENCE = `
import json, os, sys, deltalake, pyarrow.compute as pc
t = deltalake.DeltaTable(sys.argv[1])
a = t.to_pyarrow_table(columns=["order_id", "customer_id"])
print(json.dumps({"n": a.num_rows, "sc": pc.sum(a["customer_id"]).as_py(),
                  "lo": pc.min(a["order_id"]).as_py(), "hi": pc.max(a["order_id"]).as_py(),
                  "files": len(t.file_uris())}), flush=True)
os._exit(0)  # its answer is out; pyarrow's thread pool can abort at interpreter exit
`;

let server;
let expected;
let lake;
before(async () => {
  // First: it clears the work folder when it builds the lake.
  lake = demoFixture().lake;
  fs.mkdirSync(DIR, { recursive: true });
  expected = JSON.parse(execFileSync(python(), ['-c', WRITE, DIR], { encoding: 'utf8' }));
  server = await startServer();
});
after(() => server?.stop());

/** Puts version `v` at the table's one URL (a new file: new size, mtime and so ETag). */
function publish(v, name = 't.parquet') {
  const to = path.join(DIR, name);
  fs.copyFileSync(path.join(DIR, `${v}.parquet`), `${to}.tmp`);
  fs.renameSync(`${to}.tmp`, to);
  return `${server.base}/tests/js/.work/cache/${name}`;
}

/** What the server answered since the last call: GETs, HEADs and bytes for `name`. */
async function served(name = 't.parquet') {
  const log = (await server.stats(true)).log.filter((e) => e[1].endsWith(`/${name}`));
  return {
    gets: log.filter((e) => e[0] === 'GET').length,
    heads: log.filter((e) => e[0] === 'HEAD').length,
    bytes: log.reduce((n, e) => n + e[4], 0),
  };
}

async function query(m) {
  m.resetStats();
  const rows = (await m.sql(SQL)).toArray();
  return { rows, stats: m.stats(), io: await served() };
}

test('a query run again sends one HEAD, no GET, and counts what memory answered', async () => {
  const url = publish('v1');
  const m = await Medallion.create();
  await m.registerParquet('t', url);
  await served();
  const cold = await query(m);
  const warm = await query(m);
  assert.deepEqual(cold.rows, [expected.v1]);
  assert.deepEqual(warm.rows, [expected.v1]);
  assert.ok(cold.io.gets > 0 && cold.io.bytes > 0);
  // The engine's figures are the server's.
  assert.equal(cold.stats.requests, cold.io.gets + cold.io.heads);
  assert.equal(cold.stats.bytes, cold.io.bytes);
  assert.deepEqual(warm.io, { gets: 0, heads: 1, bytes: 0 });
  assert.equal(warm.stats.requests, 1);
  assert.equal(warm.stats.revalidations, 1);
  assert.equal(warm.stats.bytes, 0);
  assert.ok(warm.stats.cacheHits > 0);
  // The first run may already reuse the footer read's bytes; the second needs all of them.
  const needed = cold.stats.bytes + cold.stats.bytesFromCache;
  assert.equal(warm.stats.bytesFromCache, needed, 'the second run reads exactly the bytes of the first');
  assert.ok(warm.stats.cachedBytes >= needed);
  // Registering the unchanged file again is answered from memory too, after one HEAD.
  m.resetStats();
  await m.registerParquet('t', url);
  assert.deepEqual(await served(), { gets: 0, heads: 1, bytes: 0 });
  assert.equal(m.stats().cacheHits, 1);
});

test('a file rewritten with a new ETag is read again, never served from memory', async () => {
  const url = publish('v1');
  const m = await Medallion.create();
  await m.registerParquet('t', url);
  assert.deepEqual((await query(m)).rows, [expected.v1]);
  assert.equal((await query(m)).io.gets, 0, 'cached before the change');
  publish('v2');
  // The registered footer is v1's: the engine must say so, not answer from v1's bytes (nor
  // read v2's bytes at v1's offsets). The HEAD that would have confirmed v1 tells.
  m.resetStats();
  await assert.rejects(m.sql(SQL), /changed since this engine first read it .*register the table again/);
  assert.deepEqual(await served(), { gets: 0, heads: 1, bytes: 0 });
  assert.equal(m.stats().cacheHits, 0);
  assert.equal(m.stats().cachedBytes, 0, 'v1 bytes dropped');
  // Registered again, the table is v2, from the network, then from memory.
  m.resetStats();
  await m.registerParquet('t', url);
  const fresh = await query(m);
  assert.deepEqual(fresh.rows, [expected.v2]);
  assert.equal(fresh.stats.cacheHits, 0);
  assert.ok(fresh.io.gets > 0);
  const again = await query(m);
  assert.deepEqual(again.rows, [expected.v2]);
  assert.equal(again.io.gets, 0);
});

test('while the server says Cache-Control: max-age, a query run again sends nothing; after it, one HEAD', async () => {
  const lifetimeMs = 3000;
  const fresh = await startServer({ cacheControl: `max-age=${lifetimeMs / 1000}` });
  const servedHere = async () => {
    const log = (await fresh.stats(true)).log.filter((e) => e[1].endsWith('/fresh.parquet'));
    return { gets: log.filter((e) => e[0] === 'GET').length, heads: log.filter((e) => e[0] === 'HEAD').length };
  };
  try {
    publish('v1', 'fresh.parquet');
    const m = await Medallion.create();
    await m.registerParquet('t', `${fresh.base}/tests/js/.work/cache/fresh.parquet`);
    assert.deepEqual((await m.sql(SQL)).toArray(), [expected.v1]);
    const coldDone = Date.now();
    assert.ok((await servedHere()).gets > 0);
    m.resetStats();
    assert.deepEqual((await m.sql(SQL)).toArray(), [expected.v1]);
    assert.ok(Date.now() - coldDone < lifetimeMs, 'the warm run must start within the lifetime');
    assert.deepEqual(await servedHere(), { gets: 0, heads: 0 });
    assert.equal(m.stats().revalidations, 0);
    assert.ok(m.stats().cacheHits > 0);
    // Past the lifetime the file is confirmed again before memory answers.
    await new Promise((r) => setTimeout(r, lifetimeMs - (Date.now() - coldDone) + 200));
    m.resetStats();
    assert.deepEqual((await m.sql(SQL)).toArray(), [expected.v1]);
    assert.deepEqual(await servedHere(), { gets: 0, heads: 1 });
    assert.equal(m.stats().revalidations, 1);
  } finally {
    await fresh.stop();
  }
});

test('the byte cap holds, and cacheBytes: 0 turns the cache off', async () => {
  const url = publish('v1', 'capped.parquet');
  const full = await Medallion.create();
  await full.registerParquet('t', url);
  await full.sql(SQL);
  const needed = full.stats().cachedBytes;
  assert.ok(needed > 100_000, `${needed} bytes cached: the file must be large enough to cap`);
  const cap = Math.floor(needed / 3);
  const capped = await Medallion.create({ cacheBytes: cap });
  await capped.registerParquet('t', url);
  for (let i = 0; i < 3; i++) {
    assert.deepEqual((await capped.sql(SQL)).toArray(), [expected.v1]);
    assert.ok(capped.stats().cachedBytes <= cap, `${capped.stats().cachedBytes} > ${cap}`);
  }
  const off = await Medallion.create({ cacheBytes: 0 });
  await off.registerParquet('t', url);
  await off.sql(SQL);
  await served('capped.parquet');
  off.resetStats();
  assert.deepEqual((await off.sql(SQL)).toArray(), [expected.v1]);
  const io = await served('capped.parquet');
  assert.ok(io.gets > 0 && io.heads === 0);
  assert.deepEqual([off.stats().cacheHits, off.stats().cachedBytes], [0, 0]);
});

test('a Delta table queried again sends nothing: its data files are never rewritten, so none is confirmed', async () => {
  const table = path.join(lake, 'bronze/orders_raw');
  const { files, ...reference } = JSON.parse(execFileSync(python(), ['-c', DELTA_REFERENCE, table], { encoding: 'utf8' }));
  assert.ok(files >= 2, `${files} data files: the table must have several`);
  const rel = path.relative(REPO, table);
  const url = `${server.base}/${rel}`;
  const io = async () => {
    const log = (await server.stats(true)).log.filter((e) => e[1].includes(`/${rel}/`));
    const data = log.filter((e) => !e[1].includes('/_delta_log/'));
    return { dataGets: data.filter((e) => e[0] === 'GET').length, dataHeads: data.filter((e) => e[0] === 'HEAD').length, log: log.length - data.length };
  };
  const sql = 'SELECT count(*) AS n, sum(customer_id) AS sc, min(order_id) AS lo, max(order_id) AS hi FROM o';
  const m = await Medallion.create();
  await m.registerDelta('o', url);
  await io();
  assert.deepEqual((await m.sql(sql)).toArray(), [reference]);
  assert.ok((await io()).dataGets >= files, 'the first query reads every data file');
  m.resetStats();
  assert.deepEqual((await m.sql(sql)).toArray(), [reference]);
  // The snapshot was read at registration, and data files are immutable: no request at all.
  assert.deepEqual(await io(), { dataGets: 0, dataHeads: 0, log: 0 });
  assert.deepEqual([m.stats().requests, m.stats().revalidations], [0, 0]);
  assert.ok(m.stats().cacheHits >= files);
  // Registered again ("the table as it is now"): its log is read, its data files come from memory.
  m.resetStats();
  await m.registerDelta('o', url);
  assert.deepEqual((await m.sql(sql)).toArray(), [reference]);
  const again = await io();
  assert.ok(again.log > 0, 'the log is read again');
  assert.deepEqual([again.dataGets, again.dataHeads], [0, 0]);
  // A plain Parquet file carries no such promise: the same bytes, registered as Parquet, are
  // confirmed by one HEAD per query.
  const part = fs.readdirSync(table).find((f) => f.endsWith('.parquet'));
  const p = await Medallion.create();
  await p.registerParquet('o', `${url}/${part}`);
  await p.sql(sql);
  await io();
  await p.sql(sql);
  assert.deepEqual(await io(), { dataGets: 0, dataHeads: 1, log: 0 });
});
