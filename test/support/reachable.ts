import { existsSync, readFileSync } from 'node:fs';
import { Socket } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const packageRoot = fileURLToPath(new URL('../../', import.meta.url));

/** Whether something accepts TCP connections at host:port within `timeoutMs`. */
export function canConnect(port: number, host = '127.0.0.1', timeoutMs = 1_000): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = new Socket();
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(timeoutMs, () => done(false));
    socket.once('error', () => done(false));
    socket.connect(port, host, () => done(true));
  });
}

/**
 * Whether a backend suite should run. Under CI=true a missing server fails the suite (it throws);
 * elsewhere the suite is skipped with a loud warning, so that `npm test` passes on a laptop.
 */
export async function serverOrSkip(
  name: string,
  port: number,
  host = '127.0.0.1',
): Promise<boolean> {
  if (await canConnect(port, host)) return true;
  const message = `${name} is not reachable at ${host}:${port}`;
  if (process.env.CI === 'true') throw new Error(`${message} (CI=true: backend suites must run)`);
  console.warn(`\n!!! SKIPPING ${name} tests: ${message}. Start it to run them. !!!\n`);
  return false;
}

/** Whether a server binary is on the PATH; under CI=true its absence fails like a missing server. */
export async function binaryOrSkip(name: string, binary: string): Promise<boolean> {
  const { execFileSync } = await import('node:child_process');
  try {
    execFileSync('sh', ['-c', `command -v ${binary}`], { stdio: 'ignore' });
    return true;
  } catch {
    const message = `${binary} is not installed`;
    if (process.env.CI === 'true') throw new Error(`${message} (CI=true: ${name} tests must run)`);
    console.warn(`\n!!! SKIPPING ${name} tests: ${message}. !!!\n`);
    return false;
  }
}

/**
 * A loopback port where nothing listens and nothing will: a connection to it is refused.
 *
 * A port from `freePort()` is only free when asked. The kernel hands the same range out again,
 * to servers other test files start and to outgoing connections, so a test that holds on to it
 * can find something there later. A port below 1024 is outside that range: no test binds one,
 * and connecting to it needs no privilege. The first of 1023 down to 1000 that refuses is taken
 * (lower ones include ports that `fetch` will not connect to at all, such as 1).
 */
export async function closedPort(): Promise<number> {
  closed ??= findClosedPort();
  return closed;
}
let closed: Promise<number> | undefined;

async function findClosedPort(): Promise<number> {
  const { connect } = await import('node:net');
  for (let port = 1023; port >= 1000; port--) {
    const refused = await new Promise<boolean>((resolve) => {
      const socket = connect({ host: '127.0.0.1', port, timeout: 500 });
      const done = (result: boolean) => {
        socket.destroy();
        resolve(result);
      };
      socket.once('connect', () => done(false));
      socket.once('timeout', () => done(false));
      socket.once('error', (e: NodeJS.ErrnoException) => done(e.code === 'ECONNREFUSED'));
    });
    if (refused) return port;
  }
  throw new Error('no loopback port from 1000 to 1023 refuses connections');
}

/** A free TCP port on loopback. */
export async function freePort(): Promise<number> {
  const { createServer } = await import('node:net');
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

/**
 * Whether the built package (`dist/<entry>` for each entry) exists, for tests whose child
 * processes import it as a user's would. Under CI=true its absence fails the suite; elsewhere
 * the suite is skipped with a loud warning. `npm test` builds first.
 */
export function builtOrSkip(name: string, entries: string[]): boolean {
  const missing = entries.filter((entry) => !existsSync(join(packageRoot, 'dist', entry)));
  if (missing.length === 0) return true;
  const message = `dist/${missing.join(', dist/')} missing: run \`npm run build\` (npm test does)`;
  if (process.env.CI === 'true') throw new Error(`${message} (CI=true: ${name} tests must run)`);
  console.warn(`\n!!! SKIPPING ${name} tests: ${message} !!!\n`);
  return false;
}

/**
 * Whether a fixture package under test/ (its own package.json and lockfile, for a library that
 * cannot sit in the root lockfile) has its pinned dependencies installed, as `.ci/run` installs
 * them. Under CI=true a missing or stale install fails the suite; elsewhere the suite is skipped
 * with a loud warning.
 */
export function fixtureOrSkip(name: string, dir: string): boolean {
  const manifest = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as {
    dependencies: Record<string, string>;
  };
  const stale = Object.entries(manifest.dependencies).filter(([dependency, version]) => {
    const installed = join(dir, 'node_modules', dependency, 'package.json');
    return (
      !existsSync(installed) || JSON.parse(readFileSync(installed, 'utf8')).version !== version
    );
  });
  if (stale.length === 0) return true;
  const relative = dir.startsWith(packageRoot) ? dir.slice(packageRoot.length) : dir;
  const message = `${stale.map(([dependency, version]) => `${dependency}@${version}`).join(', ')} not installed in ${relative}: run \`npm ci --prefix ${relative}\` (.ci/run does)`;
  if (process.env.CI === 'true') throw new Error(`${message} (CI=true: ${name} tests must run)`);
  console.warn(`\n!!! SKIPPING ${name} tests: ${message} !!!\n`);
  return false;
}
