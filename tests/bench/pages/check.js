// The number each engine's answer is reduced to, so that browser.mjs can compare it with native
// DuckDB's (relative 1e-6, same row count). Mirrored by CHECK_SQL in ../browser.mjs.
const CHECK_COLUMN = { q1: 'sum_charge', q6: 'revenue', point: 'l_extendedprice' };

/** Σ of the query's check column over `rows` (plain objects); for `count`, the count. */
export function checkNumber(queryId, rows) {
  const column = CHECK_COLUMN[queryId];
  let sum = 0;
  for (const row of rows) sum += Number(column ? row[column] : Object.values(row)[0]);
  return sum;
}

/** Text of an error, with its cause if it has one. */
export function errorText(e) {
  const text = `${e?.name ?? 'Error'}: ${e?.message ?? e}`;
  return e?.cause ? `${text} (cause: ${e.cause.message ?? e.cause})` : text;
}
