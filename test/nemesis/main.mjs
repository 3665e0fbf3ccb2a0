// `npm run nemesis`: bundles main.ts (Node 20 runs no TypeScript) and runs it. The workers import
// the BUILT package, so the npm script builds first.
import { mkdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const root = fileURLToPath(new URL('../../', import.meta.url));
const outdir = `${root}.tmp/nemesis`;
mkdirSync(outdir, { recursive: true });
const outfile = `${outdir}/main.mjs`;
await build({
  entryPoints: [fileURLToPath(new URL('./main.ts', import.meta.url))],
  outfile,
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  packages: 'external',
  // The runner finds worker.mjs next to itself.
  define: { 'import.meta.url': JSON.stringify(new URL('./runner.ts', import.meta.url).href) },
  logLevel: 'warning',
});
await import(outfile);
