#!/usr/bin/env node
// `npm run build`: builds the npm package's WebAssembly module and its JS glue into wasm/pkg/.
//  1. the wasm-bindgen CLI at exactly the version of the wasm-bindgen crate in Cargo.lock,
//     installed with cargo into ~/.cache/medallion/tools if missing (a mismatch fails at load);
//  2. `cargo build -p medallion-wasm --target wasm32-unknown-unknown --profile wasm-release`;
//  3. `wasm-bindgen --target web` (ESM that runs in browsers, Node and workerd);
//  4. binaryen's `wasm-opt` (132, from npm) sorts the functions by name, then drops the names:
//     the linker scatters the many copies of each generic function beyond gzip's 32 KB window,
//     and side by side they compress (gzip -9 8.58 → 7.37 MB, brotli 5.05 → 4.95 MB; the code
//     is unchanged, so is its speed; ~35 s on one core). `-Oz` runs first only with
//     MEDALLION_WASM_OPT=1: it shrinks the raw module but makes what users download larger
//     (raw 35.8 → 30.8 MB, gzip -9 8.55 → 8.89 MB, in 20 minutes on one core);
//  5. prints the module's raw and gzipped size.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import zlib from 'node:zlib';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
// Its own folder under the native build's: cargo locks a target folder for a whole build, and
// tests/run.sh builds this module while the native tests compile.
const targetDir = path.join(process.env.CARGO_TARGET_DIR || path.join(os.homedir(), '.cache/medallion/target'), 'npm');
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
// The names stay for wasm-opt to sort by; it strips them after.
run(bindgen, ['--target', 'web', '--remove-producers-section', '--out-dir', out, '--out-name', 'medallion_wasm', built]);

const wasm = path.join(out, 'medallion_wasm_bg.wasm');
const wasmOpt = path.join(repo, 'node_modules/binaryen/bin/wasm-opt');
if (!fs.existsSync(wasmOpt)) throw new Error(`${wasmOpt} is missing: run \`npm ci\` first`);
const features = ['--enable-bulk-memory', '--enable-nontrapping-float-to-int', '--enable-sign-ext', '--enable-mutable-globals', '--enable-reference-types', '--enable-multivalue'];
if (process.env.MEDALLION_WASM_OPT === '1') {
  log('wasm-opt -Oz (slow)');
  run(wasmOpt, ['-Oz', ...features, wasm, '-o', wasm]);
}
log('wasm-opt: identical functions merged, functions sorted by name, names stripped');
run(wasmOpt, [...features, '--duplicate-function-elimination', '--reorder-functions-by-name', '--strip-debug', '--strip-producers', wasm, '-o', wasm]);

const bytes = fs.readFileSync(wasm);
const gz = zlib.gzipSync(bytes, { level: 9 }).length;
const mb = (n) => (n / 1e6).toFixed(2);
log(`wasm/pkg/medallion_wasm_bg.wasm: ${mb(bytes.length)} MB, ${mb(gz)} MB gzipped; built in ${((Date.now() - started) / 1000).toFixed(0)} s`);
fs.writeFileSync(path.join(out, 'size.json'), JSON.stringify({ bytes: bytes.length, gzip: gz }) + '\n');
