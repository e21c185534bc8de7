#!/usr/bin/env node
// `PORT=8787 [LAKE_URL=http://host/lake] [AWS_REGION=… AWS_ACCESS_KEY_ID=… AWS_SECRET_ACCESS_KEY=…
// [AWS_ENDPOINT_URL=…]] npm run edge`: the edge example in workerd, the open-source Cloudflare
// Workers runtime, on 127.0.0.1:$PORT. Build the package first (`npm run build`).
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const wasm = path.join(here, '../../wasm/pkg/medallion_wasm_bg.wasm');
if (!fs.existsSync(wasm)) {
  console.error(`no ${path.relative(process.cwd(), wasm)}: run \`npm run build\` first`);
  process.exit(2);
}
const port = process.env.PORT || '8787';
const workerd = createRequire(import.meta.url).resolve('workerd/bin/workerd');
console.error(`medallion edge worker on http://127.0.0.1:${port}  (LAKE_URL=${process.env.LAKE_URL ?? 'unset: /gold/* disabled'})`);
const child = spawn(workerd, ['serve', path.join(here, 'config.capnp'), '--socket-addr', `http=127.0.0.1:${port}`], {
  stdio: 'inherit',
  env: {
    ...process.env,
    ...Object.fromEntries(
      ['LAKE_URL', 'AWS_REGION', 'AWS_ENDPOINT_URL', 'AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'AWS_SESSION_TOKEN']
        .map((name) => [name, process.env[name] ?? '']),
    ),
  },
});
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => child.kill(sig));
child.on('exit', (code, signal) => process.exit(code ?? (signal ? 1 : 0)));
