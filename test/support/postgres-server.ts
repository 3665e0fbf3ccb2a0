import { execFile } from 'node:child_process';
import { chownSync, existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { freePort } from './reachable.js';

const run = promisify(execFile);

/** A throwaway PostgreSQL cluster for fault tests: never the shared server. */
export interface PostgresServer {
  port: number;
  /** `postgres://postgres@127.0.0.1:<port>/postgres` */
  url: string;
  /** The postmaster's pid while it runs. */
  pid(): number | undefined;
  start(): Promise<void>;
  /** `fast` disconnects clients and shuts down cleanly; `immediate` is a crash, recovered on start. */
  stop(mode?: 'fast' | 'immediate'): Promise<void>;
  restart(mode?: 'fast' | 'immediate'): Promise<void>;
  /** Stop it for sure (SIGKILL if pg_ctl fails) and delete its folder. */
  destroy(): Promise<void>;
}

// PostgreSQL refuses to run as root; CI runs as root, so the cluster is run by the postgres user.
function asServerUser(): { prefix: string[]; uid?: number; gid?: number } {
  if (process.getuid?.() !== 0) return { prefix: [] };
  const passwd = readFileSync('/etc/passwd', 'utf8')
    .split('\n')
    .map((line) => line.split(':'))
    .find((fields) => fields[0] === 'postgres');
  if (!passwd) throw new Error('running as root and there is no postgres user to run PostgreSQL');
  return {
    prefix: ['runuser', '-u', 'postgres', '--'],
    uid: Number(passwd[2]),
    gid: Number(passwd[3]),
  };
}

const running = new Set<number>();
let exitHookInstalled = false;

// If the test process dies without its teardown, do not leave a postmaster behind.
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

export async function startPostgresServer(): Promise<PostgresServer> {
  const user = asServerUser();
  const dir = mkdtempSync(join(tmpdir(), 'cachelock-pg-'));
  if (user.uid !== undefined) chownSync(dir, user.uid, user.gid!);
  const data = join(dir, 'data');
  const port = await freePort();
  const exec = (command: string, args: string[]) => {
    const [file, ...rest] = [...user.prefix, command, ...args];
    return run(file!, rest, { timeout: 60_000 });
  };
  await exec('initdb', [
    '-D',
    data,
    '-U',
    'postgres',
    '--auth=trust',
    '-N',
    '-E',
    'UTF8',
    '--locale=C',
  ]);

  let pid: number | undefined;
  const readPid = () => {
    const file = join(data, 'postmaster.pid');
    if (!existsSync(file)) return undefined;
    const value = Number(readFileSync(file, 'utf8').split('\n')[0]);
    return Number.isInteger(value) && value > 0 ? value : undefined;
  };
  const kill = () => {
    if (pid === undefined) return;
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // Already gone.
    }
    running.delete(pid);
    pid = undefined;
  };

  const server: PostgresServer = {
    port,
    url: `postgres://postgres@127.0.0.1:${port}/postgres`,
    pid: () => pid,
    async start() {
      const options = `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off`;
      await exec('pg_ctl', [
        '-D',
        data,
        '-o',
        options,
        '-l',
        join(dir, 'log'),
        '-w',
        '-t',
        '30',
        'start',
      ]);
      pid = readPid();
      if (pid !== undefined) running.add(pid);
      killOnExit();
    },
    async stop(mode = 'fast') {
      try {
        await exec('pg_ctl', ['-D', data, '-m', mode, '-w', '-t', '30', 'stop']);
        if (pid !== undefined) running.delete(pid);
        pid = undefined;
      } catch {
        kill();
      }
    },
    async restart(mode = 'fast') {
      await server.stop(mode);
      await server.start();
    },
    async destroy() {
      if (pid !== undefined) await server.stop('immediate');
      kill();
      rmSync(dir, { recursive: true, force: true });
    },
  };
  await server.start();
  return server;
}
