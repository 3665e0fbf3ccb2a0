// Runs every benchmark in bench/ (or those named: `npm run bench -- memory redis`) one after
// another, each in its own process, against the built package. Build first: `npm run build`.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { cpus } from 'node:os';

const here = new URL('.', import.meta.url);
if (!existsSync(new URL('../dist/index.js', import.meta.url))) {
  console.error('bench: build first (npm run build)');
  process.exit(1);
}
const wanted = process.argv.slice(2);
const all = readdirSync(here)
  .filter(
    (file) =>
      file.endsWith('.mjs') &&
      !['run.mjs', 'lib.mjs', 'contention.mjs', 'floor.mjs', 'servers.mjs'].includes(file),
  )
  .map((file) => file.replace(/\.mjs$/, ''));
const chosen = wanted.length > 0 ? all.filter((name) => wanted.includes(name)) : all;

console.log(
  `# cachelock benchmarks\n\nNode ${process.version}, ${cpus().length} x ${cpus()[0]?.model ?? 'cpu'}, ${new Date().toISOString()}`,
);
let failed = 0;
for (const name of ['memory', ...chosen.filter((n) => n !== 'memory')].filter((n) =>
  chosen.includes(n),
)) {
  console.log(`\n## ${name}`);
  const result = spawnSync(
    process.execPath,
    ['--expose-gc', new URL(`${name}.mjs`, here).pathname],
    {
      stdio: 'inherit',
    },
  );
  if (result.status !== 0) failed++;
}
process.exit(failed > 0 ? 1 : 0);
