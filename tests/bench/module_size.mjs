#!/usr/bin/env node
// What the WebAssembly module is made of: its code and data summed by Rust crate.
//
//   node tests/bench/module_size.mjs [WASM] [--top 40]
//
// WASM defaults to the cargo output that still has its name section,
// ~/.cache/medallion/target/wasm32-unknown-unknown/wasm-release/medallion_wasm.wasm (wasm-bindgen
// keeps the names too, so wasm/pkg/medallion_wasm_bg.wasm also works). Uses twiggy from
// ~/.cache/medallion/tools/bin (`cargo install twiggy --root ~/.cache/medallion/tools`) or PATH.
//
// Every item of `twiggy top` (shallow size: the bytes of that function or data segment alone, so
// the items add up to the module) is given to one crate: the first crate named in its demangled
// name that is not the standard library (so `core::ptr::drop_in_place<datafusion_expr::Expr>` is
// datafusion_expr's, `<arrow_array::… as core::fmt::Debug>::fmt` arrow_array's); names with only
// std crates go to `std`; data segments, tables and unnamed items to `(data, tables, unnamed)`.
// Prints the largest items, the crates, the crates grouped by concern (SQL parser, DataFusion
// functions, Parquet codecs, …) and twiggy's largest dominators (retained size: what removing
// that item would remove).
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const STD = new Set(['core', 'alloc', 'std']);
const DEFAULT_WASM = path.join(process.env.CARGO_TARGET_DIR || path.join(os.homedir(), '.cache/medallion/target'),
  'wasm32-unknown-unknown/wasm-release/medallion_wasm.wasm');

// Groups for the summary, first match wins (crate names use underscores).
const GROUPS = [
  ['sqlparser', /^sqlparser$/],
  ['datafusion-functions*', /^datafusion_functions/],
  ['datafusion (other)', /^datafusion/],
  ['parquet', /^parquet$/],
  ['codecs: brotli', /^(brotli|brotli_decompressor|alloc_no_stdlib|alloc_stdlib)$/],
  ['codecs: zstd', /^zstd/],
  ['codecs: flate2/miniz', /^(flate2|miniz_oxide|adler2?)$/],
  ['codecs: lz4', /^lz4/],
  ['codecs: snap', /^snap$/],
  ['arrow', /^arrow/],
  ['regex', /^(regex|regex_automata|regex_syntax|aho_corasick|memchr)$/],
  ['chrono / chrono-tz', /^(chrono|chrono_tz)$/],
  ['object_store', /^object_store$/],
  ['delta / medallion', /^(medallion|delta)/],
  ['serde / json', /^(serde|serde_json|serde_wasm_bindgen|simd_json)$/],
  ['wasm-bindgen / js-sys / web-sys', /^(wasm_bindgen|js_sys|web_sys|wasm_bindgen_futures)/],
  ['hashing (hashbrown/ahash/…)', /^(hashbrown|ahash|twox_hash|xxhash_rust|foldhash)$/],
  ['std (core/alloc/std)', /^std$/],
  ['(data, tables, unnamed)', /^\(data/],
];

function twiggy() {
  const local = path.join(os.homedir(), '.cache/medallion/tools/bin/twiggy');
  return fs.existsSync(local) ? local : 'twiggy';
}

function runTwiggy(args) {
  return execFileSync(twiggy(), args, { encoding: 'utf8', maxBuffer: 1 << 30 });
}

/** The crate an item is charged to (see the comment at the top). */
export function crateOf(name) {
  if (/^(data|elem|table|memory|global|type|import|export)\[|^"function names" subsection|^(custom section|wasm magic|header)/i.test(name)
    || /^code\[\d+\]$/.test(name)) {
    return '(data, tables, unnamed)';
  }
  const crates = [...name.matchAll(/(?:^|[^A-Za-z0-9_])([a-z_][a-z0-9_]*)::/g)].map((m) => m[1]);
  const own = crates.find((c) => !STD.has(c));
  if (own) return own;
  if (crates.length) return 'std';
  if (name.startsWith('__wbg') || name.startsWith('__wbindgen')) return 'wasm_bindgen';
  return '(other symbols)';
}

const mb = (n) => (n / 1e6).toFixed(2);
const pct = (n, total) => `${((100 * n) / total).toFixed(1)}%`;

function printTable(title, rows, total) {
  console.log(`\n${title}`);
  const w = Math.max(...rows.map(([k]) => k.length), 5);
  console.log(`${'name'.padEnd(w)}  ${'MB'.padStart(7)}  ${'%'.padStart(6)}`);
  for (const [k, v] of rows) console.log(`${k.padEnd(w)}  ${mb(v).padStart(7)}  ${pct(v, total).padStart(6)}`);
}

function main() {
  const argv = process.argv.slice(2);
  if (argv.includes('--help') || argv.includes('-h')) {
    console.log(fs.readFileSync(new URL(import.meta.url), 'utf8').split('\n').slice(1, 19).map((l) => l.replace(/^\/\/ ?/, '')).join('\n'));
    return;
  }
  const topIdx = argv.indexOf('--top');
  const topN = topIdx >= 0 ? Number(argv[topIdx + 1]) : 40;
  const wasm = argv.find((a, i) => !a.startsWith('--') && i !== topIdx + 1) ?? DEFAULT_WASM;
  if (!fs.existsSync(wasm)) throw new Error(`no ${wasm}: build it first (npm run build)`);
  const fileSize = fs.statSync(wasm).size;

  const items = JSON.parse(runTwiggy(['top', '-n', '1000000', '--format', 'json', wasm]));
  const total = items.reduce((n, it) => n + it.shallow_size, 0);
  console.log(`${wasm}: ${mb(fileSize)} MB on disk, ${items.length} items, ${mb(total)} MB counted by twiggy`);

  printTable(`largest ${topN} items (twiggy top -n ${topN})`, items.slice(0, topN).map((it) => [it.name.slice(0, 110), it.shallow_size]), total);

  const byCrate = new Map();
  for (const it of items) {
    const c = crateOf(it.name);
    byCrate.set(c, (byCrate.get(c) ?? 0) + it.shallow_size);
  }
  const crates = [...byCrate].sort((a, b) => b[1] - a[1]);
  printTable('by crate (shallow sizes, all items)', crates.slice(0, 45), total);

  const byGroup = new Map();
  for (const [c, v] of crates) {
    const g = GROUPS.find(([, re]) => re.test(c))?.[0] ?? 'other crates';
    byGroup.set(g, (byGroup.get(g) ?? 0) + v);
  }
  printTable('by concern', [...byGroup].sort((a, b) => b[1] - a[1]), total);

  // Dominators: the largest subtrees (retained size), two levels down from the roots.
  const tree = JSON.parse(runTwiggy(['dominators', '-d', '3', '-r', '40', '--format', 'json', wasm]));
  const flat = [];
  const walk = (node, depth) => {
    if (depth > 0) flat.push([`${'  '.repeat(depth - 1)}${node.name.slice(0, 100)}`, node.retained_size]);
    for (const child of node.children ?? []) walk(child, depth + 1);
  };
  for (const root of Array.isArray(tree) ? tree : tree.items ?? [tree]) walk(root, 1);
  printTable('dominators (retained size; twiggy dominators -d 3)', flat.filter(([, v]) => v >= total * 0.005).slice(0, 60), total);
}

main();
