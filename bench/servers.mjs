// Throwaway servers for the benchmarks, on free loopback ports under temporary folders, ended
// by their process id. (The tests have their own in test/support/, in TypeScript.)
import { execFileSync, spawn } from 'node:child_process';
import { chownSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

export function freePort() {
  return new Promise((resolve) => {
    const probe = createServer().listen(0, '127.0.0.1', () => {
      const { port } = probe.address();
      probe.close(() => resolve(port));
    });
  });
}

/** Wait until something accepts connections on `port`, or throw after about 5 s. */
async function waitForPort(port, name) {
  for (let i = 0; i < 200; i++) {
    const up = await new Promise((resolve) => {
      const socket = new Socket();
      socket.once('error', () => resolve(false));
      socket.connect(port, '127.0.0.1', () => {
        socket.destroy();
        resolve(true);
      });
    });
    if (up) return;
    await sleep(25);
  }
  throw new Error(`${name} did not start on port ${port}`);
}

/** Start `command` with `args(port, dir)`; resolves `{ port, stop }` once it listens. */
async function startDaemon(name, command, args) {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), `cachelock-bench-${name}-`));
  const child = spawn(command, args(port, dir), { stdio: 'ignore' });
  const stop = () => {
    child.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  };
  const failed = new Promise((_, reject) => child.once('error', reject));
  try {
    await Promise.race([waitForPort(port, name), failed]);
  } catch (error) {
    stop();
    throw new Error(`could not start ${name}: ${error.message}`);
  }
  return { port, stop };
}

export function startRedis() {
  return startDaemon('redis', 'redis-server', (port, dir) => [
    ...['--port', String(port), '--bind', '127.0.0.1'],
    ...['--save', '', '--appendonly', 'no', '--dir', dir],
  ]);
}

export function startMemcached() {
  return startDaemon('memcached', 'memcached', (port) => [
    ...['-l', '127.0.0.1', '-p', String(port), '-U', '0', '-m', '64'],
    ...(process.getuid?.() === 0 ? ['-u', 'root'] : []),
  ]);
}

/** initdb + pg_ctl; as the postgres user when run as root, since PostgreSQL refuses root. */
export async function startPostgres() {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'cachelock-bench-pg-'));
  const asRoot = process.getuid?.() === 0;
  if (asRoot) {
    const uid = Number(execFileSync('id', ['-u', 'postgres']));
    const gid = Number(execFileSync('id', ['-g', 'postgres']));
    chownSync(dir, uid, gid);
  }
  const exec = (command, args) =>
    execFileSync(
      asRoot ? 'runuser' : command,
      asRoot ? ['-u', 'postgres', '--', command, ...args] : args,
      { stdio: 'ignore' },
    );
  const data = join(dir, 'data');
  exec('initdb', ['-D', data, '-U', 'postgres', '--auth=trust', '-N', '-E', 'UTF8', '--locale=C']);
  exec('pg_ctl', [
    ...['-D', data, '-o'],
    `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c max_connections=100`,
    ...['-l', join(dir, 'log'), '-w', 'start'],
  ]);
  const pid = Number(readFileSync(join(data, 'postmaster.pid'), 'utf8').split('\n')[0]);
  let stopped = false;
  const stop = () => {
    if (stopped) return;
    stopped = true;
    try {
      exec('pg_ctl', ['-D', data, '-m', 'immediate', '-w', 'stop']);
    } catch {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {}
    }
    rmSync(dir, { recursive: true, force: true });
  };
  process.once('exit', stop);
  return { url: `postgres://postgres@127.0.0.1:${port}/postgres`, stop };
}

/** mariadb-install-db + mariadbd on a free port; `args` are more server options. */
export async function startMariadb(args = []) {
  const dir = mkdtempSync(join(tmpdir(), 'cachelock-bench-mariadb-'));
  const asRoot = process.getuid?.() === 0;
  const user = asRoot ? ['--user=root'] : [];
  const data = join(dir, 'data');
  execFileSync(
    'mariadb-install-db',
    ['--no-defaults', `--datadir=${data}`, ...user, '--auth-root-authentication-method=normal'],
    { stdio: 'ignore' },
  );
  const server = await startDaemon('mariadb', '/usr/sbin/mariadbd', (port) => [
    ...['--no-defaults', `--datadir=${data}`, `--port=${port}`, '--bind-address=127.0.0.1'],
    ...[`--socket=${join(dir, 'sock')}`, ...user, '--skip-log-bin', '--skip-name-resolve'],
    ...args,
  ]);
  for (let i = 0; ; i++) {
    try {
      execFileSync('mariadb', [
        ...['-h127.0.0.1', `-P${server.port}`, '-uroot', '-e'],
        'CREATE DATABASE IF NOT EXISTS test',
      ]);
      break;
    } catch (error) {
      if (i >= 100) throw error;
      await sleep(100);
    }
  }
  const stop = () => {
    server.stop();
    rmSync(dir, { recursive: true, force: true });
  };
  process.once('exit', stop);
  return { url: `mysql://root@127.0.0.1:${server.port}/test`, stop };
}

/** A single-member etcd on free loopback ports (client and peer), its data in a temp folder. */
export async function startEtcd() {
  const peer = await freePort();
  return startDaemon('etcd', 'etcd', (port, dir) => [
    ...['--data-dir', join(dir, 'data'), '--name', 'bench'],
    ...['--listen-client-urls', `http://127.0.0.1:${port}`],
    ...['--advertise-client-urls', `http://127.0.0.1:${port}`],
    ...['--listen-peer-urls', `http://127.0.0.1:${peer}`],
    ...['--initial-advertise-peer-urls', `http://127.0.0.1:${peer}`],
    ...['--initial-cluster', `bench=http://127.0.0.1:${peer}`],
    ...['--log-level', 'error', '--logger', 'zap'],
  ]);
}
