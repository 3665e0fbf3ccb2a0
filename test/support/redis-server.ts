import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { canConnect, freePort } from './reachable.js';

const run = promisify(execFile);

/**
 * A throwaway `redis-server` on a free loopback port, in its own temp folder, without
 * persistence, ended by its pid. For fault tests: never touch the shared server on 6379.
 */
export class RedisServer {
  private child: ChildProcess | undefined;

  private constructor(
    readonly port: number,
    private readonly dir: string,
    private readonly extraArgs: string[],
  ) {}

  static async start(extraArgs: string[] = []): Promise<RedisServer> {
    const port = await freePort();
    const dir = mkdtempSync(join(tmpdir(), 'cachelock-redis-'));
    const server = new RedisServer(port, dir, extraArgs);
    await server.launch();
    return server;
  }

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  /** Start it again on the same port (after `stop()` or `kill()`): an empty server. */
  async launch(): Promise<void> {
    const child = spawn(
      'redis-server',
      [
        '--port',
        String(this.port),
        '--bind',
        '127.0.0.1',
        '--save',
        '',
        '--appendonly',
        'no',
        '--dir',
        this.dir,
        '--daemonize',
        'no',
        ...this.extraArgs,
      ],
      { stdio: 'ignore', cwd: this.dir },
    );
    this.child = child;
    const deadline = Date.now() + 10_000;
    while (!(await canConnect(this.port, '127.0.0.1', 200))) {
      if (child.exitCode !== null)
        throw new Error(`redis-server on ${this.port} exited with ${child.exitCode}`);
      if (Date.now() > deadline) throw new Error(`redis-server on ${this.port} did not start`);
      await sleep(20);
    }
  }

  /** SIGKILL: the server vanishes at once, as in a crash. */
  async kill(): Promise<void> {
    await this.signal('SIGKILL');
  }

  /** SIGTERM and wait for it to exit. */
  async stop(): Promise<void> {
    await this.signal('SIGTERM');
  }

  async restart(): Promise<void> {
    await this.kill();
    await this.launch();
  }

  async cli(...args: string[]): Promise<string> {
    const { stdout } = await run('redis-cli', ['-p', String(this.port), ...args]);
    return stdout.trim();
  }

  /** End the server and remove its folder. */
  async dispose(): Promise<void> {
    await this.kill();
    rmSync(this.dir, { recursive: true, force: true });
  }

  private async signal(signal: NodeJS.Signals): Promise<void> {
    const child = this.child;
    if (child === undefined || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill(signal);
    await exited;
    this.child = undefined;
  }
}

/** A 3-master Redis Cluster of throwaway servers, created with `redis-cli --cluster create`. */
export class RedisCluster {
  private constructor(readonly servers: RedisServer[]) {}

  static async start(masters = 3): Promise<RedisCluster> {
    const servers: RedisServer[] = [];
    try {
      for (let i = 0; i < masters; i++) {
        servers.push(
          await RedisServer.start([
            '--cluster-enabled',
            'yes',
            '--cluster-config-file',
            'nodes.conf',
            '--cluster-node-timeout',
            '2000',
          ]),
        );
      }
      await run('redis-cli', [
        '--cluster',
        'create',
        ...servers.map((s) => `127.0.0.1:${s.port}`),
        '--cluster-yes',
      ]);
      const deadline = Date.now() + 15_000;
      while (!(await servers[0]!.cli('cluster', 'info')).includes('cluster_state:ok')) {
        if (Date.now() > deadline) throw new Error('the cluster did not become ready');
        await sleep(100);
      }
      return new RedisCluster(servers);
    } catch (error) {
      await Promise.all(servers.map((s) => s.dispose()));
      throw error;
    }
  }

  get nodes(): { host: string; port: number }[] {
    return this.servers.map((s) => ({ host: '127.0.0.1', port: s.port }));
  }

  async dispose(): Promise<void> {
    await Promise.all(this.servers.map((s) => s.dispose()));
  }
}

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
