import { mkdirSync, mkdtempSync } from 'node:fs';
import { basename, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const src = fileURLToPath(new URL('../../src/', import.meta.url));
// Inside the repository (and git-ignored) so that the bundle finds node_modules.
const out = fileURLToPath(new URL('../../.tmp/', import.meta.url));

/**
 * Bundle a child-process script written in TypeScript, with the current sources of the core and
 * backends, so that store-level tests need no `npm run build`. Client libraries stay external.
 * Returns the path of an .mjs file that `node` runs.
 */
export async function bundleChild(entry: string): Promise<string> {
  mkdirSync(out, { recursive: true });
  const dir = mkdtempSync(join(out, 'child-'));
  const outfile = join(dir, `${basename(entry).replace(/\.ts$/, '')}.mjs`);
  await build({
    entryPoints: [entry],
    outfile,
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    packages: 'external',
    // The sources import the core as 'cachelock' and each other as 'cachelock/<name>'.
    alias: { cachelock: `${src}index.ts` },
    plugins: [
      {
        name: 'cachelock-entries',
        setup(plugin) {
          plugin.onResolve({ filter: /^cachelock(\/.*)?$/ }, (args) => ({
            path:
              args.path === 'cachelock'
                ? `${src}index.ts`
                : `${src}${args.path.slice(10)}/index.ts`,
          }));
        },
      },
    ],
    banner: {
      js: "import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);",
    },
    logLevel: 'silent',
  });
  return outfile;
}
