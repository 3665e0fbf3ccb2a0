import { execFile, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { canConnect, freePort } from './reachable.js';

const run = promisify(execFile);

/** A throwaway MariaDB server for fault tests: never the shared server. */
export interface MariadbServer {
  port: number;
  /** `mysql://root@127.0.0.1:<port>/test` */
  url: string;
  pid(): number | undefined;
  start(): Promise<void>;
  /** SIGKILL: a crash, recovered on start (InnoDB keeps what was committed). */
  kill(): void;
  /** SIGSTOP / SIGCONT: the server hangs, connections stay open. */
  pause(): void;
  resume(): void;
  restart(): Promise<void>;
  destroy(): Promise<void>;
}

const running = new Set<number>();
let exitHookInstalled = false;

function killOnExit(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once('exit', () => {
    for (const pid of running) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // Already gone.
      }
    }
  });
}

/** Whether this machine can start one (mariadb-install-db and mariadbd on the PATH or in sbin). */
export async function mariadbBinaries(): Promise<boolean> {
  try {
    await run('sh', ['-c', 'command -v mariadb-install-db && test -x /usr/sbin/mariadbd']);
    return true;
  } catch {
    return false;
  }
}

export async function startMariadbServer(): Promise<MariadbServer> {
  const dir = mkdtempSync(join(tmpdir(), 'cachelock-mariadb-'));
  const data = join(dir, 'data');
  const port = await freePort();
  const asRoot = process.getuid?.() === 0;
  const user = asRoot ? ['--user=root'] : [];
  await run(
    'mariadb-install-db',
    [
      '--no-defaults',
      `--datadir=${data}`,
      ...user,
      '--auth-root-authentication-method=normal',
      '--skip-test-db',
    ],
    { timeout: 60_000 },
  );
  let pid: number | undefined;
  const server: MariadbServer = {
    port,
    url: `mysql://root@127.0.0.1:${port}/test`,
    pid: () => pid,
    async start() {
      const child = spawn(
        '/usr/sbin/mariadbd',
        [
          '--no-defaults',
          `--datadir=${data}`,
          `--port=${port}`,
          '--bind-address=127.0.0.1',
          `--socket=${join(dir, 'sock')}`,
          ...user,
          '--skip-log-bin',
          '--skip-name-resolve',
          '--innodb-buffer-pool-size=16M',
          '--innodb-flush-log-at-trx-commit=2',
        ],
        { stdio: 'ignore', detached: false },
      );
      pid = child.pid;
      if (pid !== undefined) running.add(pid);
      killOnExit();
      for (let i = 0; i < 300; i++) {
        if (await canConnect(port, '127.0.0.1', 200)) break;
        if (child.exitCode !== null) throw new Error(`mariadbd exited with ${child.exitCode}`);
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      // The port answers a little before the server takes queries; `test` is made once.
      for (let i = 0; ; i++) {
        try {
          await run('mariadb', [
            '-h127.0.0.1',
            `-P${port}`,
            '-uroot',
            '-e',
            'CREATE DATABASE IF NOT EXISTS test',
          ]);
          break;
        } catch (error) {
          if (i >= 100) throw error;
          await new Promise((resolve) => setTimeout(resolve, 100));
        }
      }
    },
    kill() {
      if (pid === undefined) return;
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // Already gone.
      }
      running.delete(pid);
      pid = undefined;
    },
    pause() {
      if (pid !== undefined) process.kill(pid, 'SIGSTOP');
    },
    resume() {
      if (pid !== undefined) process.kill(pid, 'SIGCONT');
    },
    async restart() {
      server.kill();
      await new Promise((resolve) => setTimeout(resolve, 200));
      await server.start();
    },
    async destroy() {
      server.kill();
      rmSync(dir, { recursive: true, force: true });
    },
  };
  await server.start();
  return server;
}
