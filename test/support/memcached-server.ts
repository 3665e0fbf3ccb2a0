import { type ChildProcess, spawn } from 'node:child_process';
import { connect } from 'node:net';
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

  /** One of the server's `stats` counters, such as `cmd_get`, over a connection of its own. */
  stat(name: string): Promise<number> {
    return new Promise((resolve, reject) => {
      const socket = connect(this.port, '127.0.0.1');
      let text = '';
      socket.setEncoding('latin1');
      socket.on('error', reject);
      socket.on('connect', () => socket.write('stats\r\n'));
      socket.on('data', (chunk: string) => {
        text += chunk;
        if (!text.endsWith('END\r\n')) return;
        socket.destroy();
        const value = new RegExp(`^STAT ${name} (\\d+)\r$`, 'm').exec(text)?.[1];
        if (value === undefined) reject(new Error(`memcached has no stat ${name}`));
        else resolve(Number(value));
      });
    });
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
