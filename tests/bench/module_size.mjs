#!/usr/bin/env node
// What the WebAssembly module is made of: its code and data summed by Rust crate.
//
//   node tests/bench/module_size.mjs [WASM] [--top 40] [--sizes]
//
// First, what users download: the shipped wasm/pkg/medallion_wasm_bg.wasm raw, gzip -9 and
// brotli (quality 11, large window), as CDNs serve it. `--sizes` stops there (no twiggy needed).
//
// WASM defaults to the cargo output that still has its name section,
// ~/.cache/medallion/target/npm/wasm32-unknown-unknown/wasm-release/medallion_wasm.wasm (wasm-bindgen
// keeps the names too, so wasm/pkg/medallion_wasm_bg.wasm also works). Uses twiggy from
// ~/.cache/medallion/tools/bin (`cargo install twiggy --root ~/.cache/medallion/tools`) or PATH.
//
// Every item of `twiggy top` (shallow size: the bytes of that function or data segment alone, so
// the items add up to the module) is given to one crate: the first crate named in its demangled
// name that is not the standard library (so `core::ptr::drop_in_place<datafusion_expr::Expr>` is
// datafusion_expr's, `<arrow_array::… as core::fmt::Debug>::fmt` arrow_array's). Names with only
// std crates (legacy mangling drops generic arguments, so a monomorphised `Vec<T>::push` cannot
// say whose it is) and unnamed code are then charged to their nearest ancestor in `twiggy
// dominators` that has a crate. Data segments stay apart (one .rodata holds every crate's
// constants); custom sections (the name section) are left out, since the shipped module lacks them.
// Prints the largest items, the crates, the crates grouped by concern (SQL parser, DataFusion
// functions, Parquet codecs, …) and the dominators that retain >= 1% of the module.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import zlib from 'node:zlib';

const STD = new Set(['core', 'alloc', 'std']);
// Names and other custom sections: in the cargo output, not in what is shipped (wasm-bindgen and
// wasm-opt drop them), so percentages are of the rest.
const CUSTOM = '(custom sections)';
// Data segments (one .rodata holds every crate's constants), tables and the like.
const DATA = '(data segments, tables)';
const SHIPPED = path.join(path.dirname(fileURLToPath(import.meta.url)), '../../wasm/pkg/medallion_wasm_bg.wasm');
const DEFAULT_WASM = path.join(process.env.CARGO_TARGET_DIR || path.join(os.homedir(), '.cache/medallion/target'),
  'npm/wasm32-unknown-unknown/wasm-release/medallion_wasm.wasm');

// Groups for the summary, first match wins (crate names use underscores).
const GROUPS = [
  ['sqlparser', /^sqlparser$/],
  ['datafusion-functions*', /^datafusion_functions/],
  ['datafusion (other)', /^datafusion/],
  ['parquet', /^parquet$/],
  ['codecs: brotli', /^(brotli|brotli_decompressor|alloc_no_stdlib|alloc_stdlib)$/],
  ['codecs: zstd', /^zstd/],  // zstd, zstd_safe, zstd_sys and 'zstd (C)'
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
  ['(data segments, tables)', /^\(data/],
];

function twiggy() {
  const local = path.join(os.homedir(), '.cache/medallion/tools/bin/twiggy');
  return fs.existsSync(local) ? local : 'twiggy';
}

function runTwiggy(args) {
  try {
    return execFileSync(twiggy(), args, { encoding: 'utf8', maxBuffer: 1 << 30 });
  } catch (e) {
    if (e.code !== 'ENOENT') throw e;
    console.error('twiggy not found (for the breakdown by crate): cargo install twiggy --root ~/.cache/medallion/tools\n' +
      '(the sizes above need no twiggy; --sizes stops after them)');
    process.exit(2);
  }
}

/** The crate an item is charged to (see the comment at the top). */
export function crateOf(name) {
  if (/subsection$|^custom section /.test(name)) return CUSTOM;
  if (/^(data|elem|table|memory|global|type|import|export)\[|^data segment /.test(name)) return DATA;
  if (/^code\[\d+\]$/.test(name)) return '(unnamed code)';
  // The C library linked in by zstd-sys (zstd's own symbol prefixes).
  if (/^(ZSTD|ZSTDMT|HUF|FSE|HIST|ZDICT|COVER|POOL|ERR|XXH|XXH64|rust_zstd_wasm_shim)_/.test(name)) return 'zstd (C)';
  // v0-mangled names carry a crate disambiguator: core[c5930c85a12de822]::num::…
  const plain = name.replace(/\[[0-9a-f]{16}\]/g, '');
  const crates = [...plain.matchAll(/(?:^|[^A-Za-z0-9_:])([a-z_][a-z0-9_]*)::/g)].map((m) => m[1]);
  const own = crates.find((c) => !STD.has(c));
  if (own) return own;
  if (crates.length || /^<(str|\[\w+\]|[iu](8|16|32|64|128|size)|f32|f64|char|bool)>::/.test(plain)) return 'std';
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

/** Raw, gzip -9 and brotli sizes of the module as shipped. */
export function compressedSizes(file) {
  const bytes = fs.readFileSync(file);
  const brotli = zlib.brotliCompressSync(bytes, {
    params: {
      [zlib.constants.BROTLI_PARAM_QUALITY]: 11,
      [zlib.constants.BROTLI_PARAM_LGWIN]: 24,
      [zlib.constants.BROTLI_PARAM_SIZE_HINT]: bytes.length,
    },
  });
  return { raw: bytes.length, gzip: zlib.gzipSync(bytes, { level: 9 }).length, brotli: brotli.length };
}

function main() {
  const argv = process.argv.slice(2);
  if (argv.includes('--help') || argv.includes('-h')) {
    const lines = fs.readFileSync(new URL(import.meta.url), 'utf8').split('\n').slice(1);
    console.log(lines.slice(0, lines.findIndex((l) => !l.startsWith('//'))).map((l) => l.replace(/^\/\/ ?/, '')).join('\n'));
    return;
  }
  if (fs.existsSync(SHIPPED)) {
    const z = compressedSizes(SHIPPED);
    console.log(`shipped ${path.relative(process.cwd(), SHIPPED)} (${fs.statSync(SHIPPED).mtime.toISOString()}): ` +
      `${mb(z.raw)} MB raw, ${mb(z.gzip)} MB gzip -9, ${mb(z.brotli)} MB brotli -q 11`);
  } else {
    console.log(`no ${SHIPPED}: run \`npm run build\``);
  }
  if (argv.includes('--sizes')) return;
  const topIdx = argv.indexOf('--top');
  const topN = topIdx >= 0 ? Number(argv[topIdx + 1]) : 40;
  const wasm = argv.find((a, i) => !a.startsWith('--') && i !== topIdx + 1) ?? DEFAULT_WASM;
  if (!fs.existsSync(wasm)) throw new Error(`no ${wasm}: build it first (npm run build)`);
  const fileSize = fs.statSync(wasm).size;

  const items = JSON.parse(runTwiggy(['top', '-n', '1000000', '--format', 'json', wasm]));
  const custom = items.filter((it) => crateOf(it.name) === CUSTOM).reduce((n, it) => n + it.shallow_size, 0);
  const total = items.reduce((n, it) => n + it.shallow_size, 0) - custom;
  console.log(`${wasm}: ${mb(fileSize)} MB on disk, ${items.length} items; custom sections (names) ${mb(custom)} MB; ` +
    `code and data ${mb(total)} MB = 100% below`);

  printTable(`largest ${topN} items (twiggy top -n ${topN})`, items.filter((it) => crateOf(it.name) !== CUSTOM).slice(0, topN).map((it) => [it.name.slice(0, 110), it.shallow_size]), total);

  const byCrate = new Map();
  for (const it of items) {
    const c = crateOf(it.name);
    if (c === CUSTOM) continue;
    byCrate.set(c, (byCrate.get(c) ?? 0) + it.shallow_size);
  }
  const crates = [...byCrate].sort((a, b) => b[1] - a[1]);
  printTable('by crate as named (shallow sizes)', crates.slice(0, 25), total);

  // Legacy symbol names drop generic arguments, so a monomorphised `core::iter::…::fold` or
  // `alloc::vec::Vec<T>::push` cannot tell whose it is. Charge such std items (and unnamed ones)
  // to the nearest ancestor in the dominator tree that has a crate: the code that alone keeps them.
  // Data segments stay apart (twiggy hangs .rodata under one of its many users).
  const tree = JSON.parse(runTwiggy(['dominators', '-d', '100000', '-r', '100000000', '--format', 'json', wasm]));
  const roots = tree.items ?? tree;
  const owned = new Map();
  const unowned = new Set(['std', '(unnamed code)', '(other symbols)']);
  const charge = (node, owner) => {
    let c = crateOf(node.name);
    if (c === CUSTOM) return;
    if (unowned.has(c) && owner && owner !== DATA) c = owner;
    owned.set(c, (owned.get(c) ?? 0) + node.shallow_size);
    for (const child of node.children ?? []) charge(child, unowned.has(c) ? owner : c);
  };
  for (const root of roots) charge(root, null);
  // Items twiggy finds no path to (data segments: it does not follow data references) keep
  // the crate their name says.
  const inTree = new Map();
  const count = (node) => {
    const key = `${node.name}\0${node.shallow_size}`;
    inTree.set(key, (inTree.get(key) ?? 0) + 1);
    for (const child of node.children ?? []) count(child);
  };
  for (const root of roots) count(root);
  for (const it of items) {
    const key = `${it.name}\0${it.shallow_size}`;
    if (inTree.get(key)) {
      inTree.set(key, inTree.get(key) - 1);
      continue;
    }
    const c = crateOf(it.name);
    if (c !== CUSTOM) owned.set(c, (owned.get(c) ?? 0) + it.shallow_size);
  }
  const ownedRows = [...owned].sort((a, b) => b[1] - a[1]);
  printTable('by crate, std and unnamed items charged to their dominator\'s crate', ownedRows.slice(0, 45), total);
  const ownedGroups = new Map();
  for (const [c, v] of ownedRows) {
    const g = GROUPS.find(([, re]) => re.test(c))?.[0] ?? 'other crates';
    ownedGroups.set(g, (ownedGroups.get(g) ?? 0) + v);
  }
  printTable('by concern, std and unnamed items charged to their dominator\'s crate', [...ownedGroups].sort((a, b) => b[1] - a[1]), total);

  // The subtrees that retain >= 1% of the module (what removing that item would remove).
  const big = [];
  const walk = (node, depth) => {
    if (node.retained_size < total * 0.01 || depth > 6 || crateOf(node.name) === CUSTOM) return;
    big.push([`${'  '.repeat(depth)}${node.name.slice(0, 100)}`, node.retained_size]);
    for (const child of node.children ?? []) walk(child, depth + 1);
  };
  for (const root of roots) walk(root, 0);
  printTable('dominators retaining >= 1% (twiggy dominators)', big, total);
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) main();
