import { createServer, type Server, Socket } from 'node:net';

interface Pair {
  client: Socket;
  upstream: Socket;
  connected: boolean;
}

/**
 * A loopback TCP proxy a test controls: `cut()` drops every connection and refuses new ones
 * (they are accepted and closed at once), `stall()` keeps connections open but stops moving
 * bytes either way (new ones are accepted and wait too), `restore()` lets traffic through again.
 */
export class TcpProxy {
  private readonly pairs = new Set<Pair>();
  private open = true;
  private stalled = false;

  private constructor(
    private readonly server: Server,
    readonly port: number,
  ) {}

  static async start(targetPort: number, targetHost = '127.0.0.1'): Promise<TcpProxy> {
    let proxy: TcpProxy | undefined;
    const server = createServer((client) => proxy!.accept(client, targetPort, targetHost));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => resolve());
    });
    const address = server.address();
    proxy = new TcpProxy(server, typeof address === 'object' && address ? address.port : 0);
    return proxy;
  }

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  cut(): void {
    this.open = false;
    for (const { client, upstream } of this.pairs) {
      client.destroy();
      upstream.destroy();
    }
    this.pairs.clear();
  }

  /** Hold every byte in both directions, as a stuck network path does, until `restore()`. */
  stall(): void {
    this.stalled = true;
    for (const pair of this.pairs) {
      pair.client.unpipe(pair.upstream);
      pair.upstream.unpipe(pair.client);
    }
  }

  restore(): void {
    this.open = true;
    if (!this.stalled) return;
    this.stalled = false;
    for (const pair of this.pairs) if (pair.connected) this.flow(pair);
  }

  async close(): Promise<void> {
    this.cut();
    await new Promise((resolve) => this.server.close(resolve));
  }

  private flow(pair: Pair): void {
    pair.client.pipe(pair.upstream);
    pair.upstream.pipe(pair.client);
  }

  private accept(client: Socket, port: number, host: string): void {
    if (!this.open) {
      client.destroy();
      return;
    }
    const upstream = new Socket();
    const pair: Pair = { client, upstream, connected: false };
    this.pairs.add(pair);
    const end = () => {
      client.destroy();
      upstream.destroy();
      this.pairs.delete(pair);
    };
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
    upstream.connect(port, host, () => {
      pair.connected = true;
      if (!this.stalled) this.flow(pair);
    });
  }
}
