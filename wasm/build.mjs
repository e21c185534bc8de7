#!/usr/bin/env node
// `npm run build`: builds the npm package's WebAssembly module and its JS glue into wasm/pkg/.
//  1. the wasm-bindgen CLI at exactly the version of the wasm-bindgen crate in Cargo.lock,
//     installed with cargo into ~/.cache/medallion/tools if missing (a mismatch fails at load);
//  2. `cargo build -p medallion-wasm --target wasm32-unknown-unknown --profile wasm-release`;
//  3. `wasm-bindgen --target web` (ESM that runs in browsers, Node and workerd);
//  4. `wasm-opt -Oz` only with MEDALLION_WASM_OPT=1: it shrinks the raw module but makes what
//     users download larger (binaryen 132 from npm, measured on this module: raw 35.8 → 30.8 MB,
//     gzip -9 8.55 → 8.89 MB, brotli 5.02 → 5.47 MB, in 20 minutes on one core; Debian's 108 too);
//  5. prints the module's raw and gzipped size.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import zlib from 'node:zlib';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const targetDir = process.env.CARGO_TARGET_DIR || path.join(os.homedir(), '.cache/medallion/target');
const tools = path.join(os.homedir(), '.cache/medallion/tools');
const out = path.join(repo, 'wasm/pkg');
const log = (s) => console.error(`[build] ${s}`);
const run = (cmd, args, opts = {}) => execFileSync(cmd, args, { stdio: 'inherit', cwd: repo, ...opts });

function lockedVersion(name) {
  const lock = fs.readFileSync(path.join(repo, 'Cargo.lock'), 'utf8');
  const m = new RegExp(`name = "${name}"\\nversion = "([^"]+)"`).exec(lock);
  if (!m) throw new Error(`${name} is not in Cargo.lock`);
  return m[1];
}

function versionOf(bin) {
  try {
    return execFileSync(bin, ['--version'], { encoding: 'utf8' }).trim().split(/\s+/)[1];
  } catch {
    return null;
  }
}

const started = Date.now();
const version = lockedVersion('wasm-bindgen');
const bindgen = path.join(tools, 'bin/wasm-bindgen');
if (versionOf(bindgen) !== version) {
  log(`installing wasm-bindgen-cli ${version} into ${tools} (about 3 minutes, once)`);
  // Not --locked: the CLI's own lockfile pins a webpki-roots release this registry lacks.
  run('cargo', ['install', 'wasm-bindgen-cli', '--version', version, '--root', tools]);
}

try {
  execFileSync('rustup', ['target', 'add', 'wasm32-unknown-unknown'], { stdio: 'ignore' });
} catch {
  log('rustup not found: assuming the wasm32-unknown-unknown target is installed');
}

log('cargo build -p medallion-wasm --target wasm32-unknown-unknown --profile wasm-release');
run('cargo', ['build', '-p', 'medallion-wasm', '--target', 'wasm32-unknown-unknown', '--profile', 'wasm-release'], {
  env: { ...process.env, CARGO_TARGET_DIR: targetDir },
});
const built = path.join(targetDir, 'wasm32-unknown-unknown/wasm-release/medallion_wasm.wasm');

fs.rmSync(out, { recursive: true, force: true });
log(`wasm-bindgen ${version} --target web`);
// The name section (8 MB) only labels stack traces; users download every byte.
run(bindgen, ['--target', 'web', '--remove-name-section', '--remove-producers-section', '--out-dir', out, '--out-name', 'medallion_wasm', built]);

const wasm = path.join(out, 'medallion_wasm_bg.wasm');
if (process.env.MEDALLION_WASM_OPT === '1') {
  log('wasm-opt -Oz (slow)');
  run('wasm-opt', ['-Oz', '--enable-bulk-memory', '--enable-nontrapping-float-to-int', '--enable-sign-ext', '--enable-mutable-globals', wasm, '-o', wasm]);
}

const bytes = fs.readFileSync(wasm);
const gz = zlib.gzipSync(bytes, { level: 9 }).length;
const mb = (n) => (n / 1e6).toFixed(2);
log(`wasm/pkg/medallion_wasm_bg.wasm: ${mb(bytes.length)} MB, ${mb(gz)} MB gzipped; built in ${((Date.now() - started) / 1000).toFixed(0)} s`);
fs.writeFileSync(path.join(out, 'size.json'), JSON.stringify({ bytes: bytes.length, gzip: gz }) + '\n');
