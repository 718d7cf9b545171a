// Builds ../vendor/jssip.min.js from entry.js with esbuild, from the packages package-lock.json
// pins. Run by `make agent-bundle` (after npm ci). With --check it writes nothing and exits 1 when
// the committed bundle differs from a fresh build (`make agent-bundle-check`).
import * as esbuild from 'esbuild';
import { readFile, writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';

const here = (p) => fileURLToPath(new URL(p, import.meta.url));
const outfile = here('../vendor/jssip.min.js');
const check = process.argv.includes('--check');

const result = await esbuild.build({
  entryPoints: [here('entry.js')],
  bundle: true,
  format: 'iife',
  platform: 'browser',
  target: 'es2020',
  minify: true,
  legalComments: 'eof',
  charset: 'ascii',
  outfile,
  write: false,
  logLevel: 'warning',
});
const fresh = result.outputFiles[0].contents;

if (check) {
  const committed = await readFile(outfile).catch(() => null);
  if (!committed || Buffer.compare(Buffer.from(fresh), committed) !== 0) {
    console.error(`static/agent/vendor/jssip.min.js is not what package-lock.json and entry.js build` +
      ` (${committed ? committed.length : 'no'} bytes committed, ${fresh.length} built): run make agent-bundle and commit it`);
    process.exit(1);
  }
  console.log(`static/agent/vendor/jssip.min.js matches a fresh build (${fresh.length} bytes)`);
} else {
  await writeFile(outfile, fresh);
  console.log(`wrote static/agent/vendor/jssip.min.js (${fresh.length} bytes)`);
}
