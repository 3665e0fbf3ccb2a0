import { Socket } from 'node:net';

/**
 * A small client for memcached's meta protocol (mg, ms, md, ma), one socket per server.
 *
 * Why not memjs: memjs speaks the binary protocol but its API has no compare-and-swap, so an
 * owner-checked release or extend cannot be written with it without a read-then-delete race.
 * The meta protocol gives compare (`C<cas>`), add mode (`ME`), CAS on store (`c`), remaining
 * TTL (`t`) and incr with create-on-miss (`ma N J`), all in plain text over one socket.
 */

/** One command: its line (without CRLF) and, for `ms`, its data block. */
export interface MetaCommand {
  line: string;
  data?: Buffer;
}

/** One reply: its status (`HD`, `VA`, `EN`, `NS`, `EX`, `NF`), its flag tokens, its value. */
export interface MetaReply {
  status: string;
  flags: string[];
  value?: Buffer;
}

export interface ConnectionOptions {
  /** How long to wait for the TCP connection. */
  connectTimeoutMs: number;
  /** How long to wait for the replies to one batch of commands once it is written. */
  timeoutMs: number;
}

interface Pending {
  expected: number;
  replies: MetaReply[];
  resolve(replies: MetaReply[]): void;
  reject(error: Error): void;
  timer: NodeJS.Timeout;
}

const CRLF = Buffer.from('\r\n');

/** A failure talking to memcached: refused, timed out, dropped, or an error reply. */
export class MemcachedError extends Error {
  override name = 'MemcachedError';
}

export class MetaConnection {
  readonly host: string;
  readonly port: number;
  private readonly options: ConnectionOptions;
  private socket: Socket | undefined;
  private connecting: Promise<Socket> | undefined;
  private readonly pending: Pending[] = [];
  private buffer: Buffer = Buffer.alloc(0);
  private closed = false;

  constructor(host: string, port: number, options: ConnectionOptions) {
    this.host = host;
    this.port = port;
    this.options = options;
  }

  get address(): string {
    return this.host.includes(':') ? `[${this.host}]:${this.port}` : `${this.host}:${this.port}`;
  }

  /**
   * Send the commands in one write and resolve with one reply per command, in order. Memcached
   * runs one connection's commands in the order they arrive, so a batch is a pipeline.
   */
  async send(commands: MetaCommand[]): Promise<MetaReply[]> {
    if (this.closed) throw new MemcachedError(`memcached connection to ${this.address} is closed`);
    const socket = await this.connect();
    const chunks: Buffer[] = [];
    for (const command of commands) {
      chunks.push(Buffer.from(command.line, 'latin1'), CRLF);
      if (command.data !== undefined) chunks.push(command.data, CRLF);
    }
    return new Promise<MetaReply[]>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.fail(
          new MemcachedError(
            `memcached at ${this.address} did not answer within ${this.options.timeoutMs} ms`,
          ),
        );
      }, this.options.timeoutMs);
      this.pending.push({ expected: commands.length, replies: [], resolve, reject, timer });
      socket.write(Buffer.concat(chunks));
    });
  }

  /** End the socket; later sends reject. */
  close(): void {
    this.closed = true;
    this.fail(new MemcachedError(`memcached connection to ${this.address} was closed`));
  }

  private connect(): Promise<Socket> {
    if (this.socket) return Promise.resolve(this.socket);
    if (this.connecting) return this.connecting;
    this.connecting = new Promise<Socket>((resolve, reject) => {
      const socket = new Socket();
      const timer = setTimeout(() => {
        socket.destroy();
        reject(
          new MemcachedError(
            `could not connect to memcached at ${this.address} within ${this.options.connectTimeoutMs} ms`,
          ),
        );
      }, this.options.connectTimeoutMs);
      socket.once('error', (error) => {
        clearTimeout(timer);
        reject(
          new MemcachedError(
            `could not connect to memcached at ${this.address}: ${error.message}`,
            {
              cause: error,
            },
          ),
        );
      });
      socket.connect(this.port, this.host, () => {
        clearTimeout(timer);
        socket.removeAllListeners('error');
        if (this.closed) {
          socket.destroy();
          reject(new MemcachedError(`memcached connection to ${this.address} was closed`));
          return;
        }
        socket.setNoDelay(true);
        // A lock store must not keep the process alive between operations.
        socket.unref();
        socket.on('data', (chunk: Buffer) => this.receive(socket, chunk));
        socket.on('error', (error) => {
          if (this.socket === socket) {
            this.fail(
              new MemcachedError(`memcached at ${this.address} failed: ${error.message}`, {
                cause: error,
              }),
            );
          }
        });
        socket.on('close', () => {
          if (this.socket === socket) {
            this.fail(new MemcachedError(`memcached at ${this.address} closed the connection`));
          }
        });
        this.socket = socket;
        resolve(socket);
      });
    }).finally(() => {
      this.connecting = undefined;
    });
    return this.connecting;
  }

  /** Drop the socket and reject every command in flight: their replies can no longer be matched. */
  private fail(error: Error): void {
    const socket = this.socket;
    this.socket = undefined;
    this.buffer = Buffer.alloc(0);
    socket?.destroy();
    for (const waiting of this.pending.splice(0)) {
      clearTimeout(waiting.timer);
      waiting.reject(error);
    }
  }

  private receive(socket: Socket, chunk: Buffer): void {
    if (this.socket !== socket) return;
    this.buffer = this.buffer.length === 0 ? chunk : Buffer.concat([this.buffer, chunk]);
    for (;;) {
      const end = this.buffer.indexOf(CRLF);
      if (end < 0) return;
      const line = this.buffer.toString('latin1', 0, end);
      const [status = '', ...flags] = line.split(' ');
      let reply: MetaReply;
      let consumed = end + 2;
      if (status === 'VA') {
        const size = Number(flags.shift());
        if (this.buffer.length < consumed + size + 2) return;
        reply = { status, flags, value: this.buffer.subarray(consumed, consumed + size) };
        consumed += size + 2;
      } else {
        reply = { status, flags };
      }
      this.buffer = this.buffer.subarray(consumed);
      if (status === 'ERROR' || status === 'CLIENT_ERROR' || status === 'SERVER_ERROR') {
        // After an error reply the stream may be out of step with the commands; start afresh.
        this.fail(new MemcachedError(`memcached at ${this.address} replied ${line}`));
        return;
      }
      const head = this.pending[0];
      if (!head) {
        this.fail(new MemcachedError(`memcached at ${this.address} sent an unexpected reply`));
        return;
      }
      head.replies.push(reply);
      if (head.replies.length === head.expected) {
        this.pending.shift();
        clearTimeout(head.timer);
        head.resolve(head.replies);
      }
    }
  }
}

/** The value of a returned flag such as `c123` (for `c`) or `t-1` (for `t`). */
export function flagValue(reply: MetaReply, flag: string): string | undefined {
  for (const token of reply.flags) if (token[0] === flag) return token.slice(1);
  return undefined;
}
