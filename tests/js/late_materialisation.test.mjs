// Late materialisation chosen per scan (`pushdownFilters` unset), in Node over a real Range
// server: a point lookup (an equality on a narrow column of a wide table) reads its filter
// column first, then only the pages of the other columns that hold matching rows, a fraction
// of the bytes the whole-row-group read takes; a range filter keeps the plain read, byte for
// byte. DuckDB gives every answer.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { Medallion } from '../../wasm/js/index.js';
import { python, startServer, WORK } from './support.mjs';

const DIR = path.join(WORK, 'late');
const QUERIES = {
  point: 'SELECT k, v, s FROM t WHERE k = 123457',
  list: 'SELECT k, v, s FROM t WHERE k IN (5, 123457, 199999) ORDER BY k',
  range: 'SELECT count(*) AS n, sum(v) AS sv, max(s) AS ms FROM t WHERE k <= 150000',
};

// 200,000 rows in 10 row groups, in no order of k (so no row group or page statistics can
// rule any out), with a text column ~40 times the bytes of k; written by pyarrow with a page index (as Medallion's
// own tables are) and s in plain pages (all its values differ), so the pages holding the
// matching rows can be fetched alone.
const WRITE = `
import json, sys, duckdb, pyarrow.parquet as pq
path = sys.argv[1] + "/t.parquet"
table = duckdb.execute("""SELECT i AS k, (i * 7) % 1000 AS v,
                                 md5(i::VARCHAR) || md5((i * 31)::VARCHAR) || md5((i * 17)::VARCHAR) AS s
                          FROM range(200000) t(i) ORDER BY hash(i)""").fetch_arrow_table()
pq.write_table(table, path, row_group_size=20000, data_page_size=16384, write_page_index=True,
               use_dictionary=["v"])
out = {}
for name, sql in json.loads(sys.argv[2]).items():
    cur = duckdb.execute(sql.replace("FROM t", f"FROM read_parquet('{path}')"))
    cols = [d[0] for d in cur.description]
    out[name] = [dict(zip(cols, [int(x) if isinstance(x, int) else x for x in row])) for row in cur.fetchall()]
print(json.dumps(out))
`;

let server;
let expected;
let url;
before(async () => {
  fs.mkdirSync(DIR, { recursive: true });
  expected = JSON.parse(execFileSync(python(), ['-c', WRITE, DIR, JSON.stringify(QUERIES)], { encoding: 'utf8' }));
  server = await startServer();
  url = `${server.base}/tests/js/.work/late/t.parquet`;
});
after(() => server?.stop());

/** Rows and the bytes the server sent for one cold query (cache off) under `options`. */
async function run(sql, options) {
  const m = await Medallion.create({ cacheBytes: 0, ...options });
  await m.registerParquet('t', url);
  await server.stats(true);
  const rows = (await m.sql(sql)).toArray().map((r) => Object.fromEntries(
    Object.entries(r).map(([k, v]) => [k, typeof v === 'bigint' ? Number(v) : v]),
  ));
  const log = (await server.stats(true)).log.filter((e) => e[1].endsWith('/t.parquet'));
  return { rows, bytes: log.reduce((n, e) => n + e[4], 0) };
}

for (const name of ['point', 'list']) {
  test(`an equality on a narrow column (${name}) reads the filter column first`, async () => {
    const auto = await run(QUERIES[name], {});
    const plain = await run(QUERIES[name], { pushdownFilters: false });
    assert.deepEqual(auto.rows, expected[name]);
    assert.deepEqual(plain.rows, expected[name]);
    assert.ok(plain.bytes > 0);
    assert.ok(auto.bytes * 3 < plain.bytes, `auto read ${auto.bytes} bytes, the plain read ${plain.bytes}`);
  });
}

test('a range filter keeps the plain read', async () => {
  const auto = await run(QUERIES.range, {});
  const plain = await run(QUERIES.range, { pushdownFilters: false });
  const forced = await run(QUERIES.range, { pushdownFilters: true });
  for (const r of [auto, plain, forced]) assert.deepEqual(r.rows, expected.range);
  assert.equal(auto.bytes, plain.bytes);
});
