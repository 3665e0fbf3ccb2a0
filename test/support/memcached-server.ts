import { type ChildProcess, spawn } from 'node:child_process';
import { canConnect, freePort } from './reachable.js';

/**
 * A throwaway `memcached` on a free loopback port (`-U 0`: no UDP), ended by its pid. Each test
 * file starts its own; `kill()` then `launch()` brings an empty server back on the same port.
 */
export class MemcachedServer {
  private child: ChildProcess | undefined;

  private constructor(readonly port: number) {}

  static async start(port?: number): Promise<MemcachedServer> {
    const server = new MemcachedServer(port ?? (await freePort()));
    await server.launch();
    return server;
  }

  get url(): string {
    return `memcached://127.0.0.1:${this.port}`;
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  async launch(): Promise<void> {
    const args = ['-l', '127.0.0.1', '-p', String(this.port), '-U', '0', '-m', '64'];
    // memcached refuses to run as root unless told which user to be.
    if (process.getuid?.() === 0) args.push('-u', 'root');
    const child = spawn('memcached', args, { stdio: 'ignore' });
    this.child = child;
    const deadline = Date.now() + 10_000;
    while (!(await canConnect(this.port, '127.0.0.1', 200))) {
      if (child.exitCode !== null) {
        throw new Error(`memcached on ${this.port} exited with ${child.exitCode}`);
      }
      if (Date.now() > deadline) throw new Error(`memcached on ${this.port} did not start`);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }

  /** SIGKILL: the server and everything in it vanish at once, as in a crash. */
  async kill(): Promise<void> {
    const child = this.child;
    if (child === undefined || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGKILL');
    await exited;
    this.child = undefined;
  }

  async restart(): Promise<void> {
    await this.kill();
    await this.launch();
  }
}
