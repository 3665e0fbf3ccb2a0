import { request as httpRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { Socket } from 'node:net';
import type {
  Compare,
  KeyValue,
  LeaseTtl,
  Operation,
  Transport,
  Txn,
  TxnResult,
  WatchHandlers,
} from './transport.js';
import { prefixEnd, type StopWatch } from './transport.js';

/**
 * etcd's JSON gateway: the v3 API as HTTP/1.1 and JSON on the client port (`/v3/kv/txn`,
 * `/v3/lease/grant`, `/v3/watch` as a streaming response), spoken with Node's own `fetch` (and
 * `node:http` for watches), so that `cachelock/etcd` needs no client library and no gRPC stack.
 *
 * Every request carries `hasleader`: a member cut off from its cluster answers at once that it
 * has no leader (and ends watches) instead of hanging. etcd checks this before it looks at the
 * request, so a refused request did nothing and is asked again: of the next endpoint straight
 * away, and once every endpoint has refused, after a pause (an election is under way), for as
 * long as one request may take. A request that got no reply at all (refused, closed before a
 * reply) goes to the next endpoint straight away; one that timed out is not repeated: the
 * caller decides.
 */

export interface Endpoint {
  host: string;
  port: number;
}

export interface GatewayOptions {
  endpoints: Endpoint[];
  /** `https:` for a TLS client port. */
  protocol?: 'http:' | 'https:';
  username?: string;
  password?: string;
  /** How long one request may take. */
  timeoutMs: number;
}

/** An error etcd answered with, or a failure to reach it. `code` is the gRPC status code. */
export class EtcdError extends Error {
  override name = 'EtcdError';
  constructor(
    message: string,
    readonly code: number | undefined,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

/** The socket of a watch's response, and whether it may keep the process alive. */
interface WatchConnection {
  held: boolean;
  socket: Socket | undefined;
}

const NOT_FOUND = 5;
const UNAVAILABLE = 14;
const NO_LEADER = /no leader/;
// The pause after every endpoint said it has no leader, doubling up to the last.
const NO_LEADER_PAUSE_MS = [50, 100, 200, 400];
const UNAUTHENTICATED = 16;
const INVALID_TOKEN = /invalid auth token/;
// How long a broken watch waits before it tries the next endpoint.
const WATCH_RETRY_MS = 250;

type Json = Record<string, any>;

const b64 = (bytes: Buffer): string => bytes.toString('base64');

export class GatewayTransport implements Transport {
  readonly #options: GatewayOptions;
  readonly #endpoints: Endpoint[];
  #current = 0;
  #token: Promise<string> | undefined;
  readonly #watches = new Set<AbortController>();
  #closed = false;

  constructor(options: GatewayOptions) {
    if (options.endpoints.length === 0) throw new TypeError('etcd: no endpoint given');
    this.#options = options;
    this.#endpoints = options.endpoints;
  }

  get where(): string {
    const { host, port } = this.#endpoints[this.#current]!;
    return `${host.includes(':') ? `[${host}]` : host}:${port}`;
  }

  #url(endpoint: Endpoint, path: string): string {
    const host = endpoint.host.includes(':') ? `[${endpoint.host}]` : endpoint.host;
    return `${this.#options.protocol ?? 'http:'}//${host}:${endpoint.port}${path}`;
  }

  async #headers(): Promise<Record<string, string>> {
    const headers: Record<string, string> = {
      'content-type': 'application/json',
      'grpc-metadata-hasleader': 'true',
    };
    if (this.#options.username !== undefined) headers.authorization = await this.#authenticate();
    return headers;
  }

  #authenticate(): Promise<string> {
    this.#token ??= this.#post(
      '/v3/auth/authenticate',
      {
        name: this.#options.username,
        password: this.#options.password ?? '',
      },
      false,
    ).then(
      (reply) => String(reply.token),
      (error) => {
        this.#token = undefined;
        throw error;
      },
    );
    return this.#token;
  }

  /** POST, asked again while every member answers that it has no leader (see above). */
  async #post(path: string, body: Json, authenticated = true): Promise<Json> {
    const started = Date.now();
    for (let round = 0; ; round++) {
      try {
        return await this.#postRound(path, body, authenticated);
      } catch (error) {
        const pause = NO_LEADER_PAUSE_MS[Math.min(round, NO_LEADER_PAUSE_MS.length - 1)]!;
        if (!noLeader(error) || Date.now() - started + pause >= this.#options.timeoutMs) {
          throw error;
        }
        await new Promise((resolve) => setTimeout(resolve, pause));
      }
    }
  }

  /**
   * POST to the current endpoint; on a connection that never carried the request, or a member
   * that refused it for want of a leader, the next.
   */
  async #postRound(path: string, body: Json, authenticated: boolean): Promise<Json> {
    if (this.#closed) throw new EtcdError('etcd: the store is closed', undefined);
    let lastError: unknown;
    let refused: EtcdError | undefined;
    for (let tried = 0; tried < this.#endpoints.length; tried++) {
      const index = this.#current;
      const endpoint = this.#endpoints[index]!;
      let response: Response;
      try {
        const headers = authenticated
          ? await this.#headers()
          : { 'content-type': 'application/json' };
        response = await fetch(this.#url(endpoint, path), {
          method: 'POST',
          headers,
          body: JSON.stringify(body),
          signal: AbortSignal.timeout(this.#options.timeoutMs),
        });
      } catch (error) {
        lastError = error;
        this.#next(index);
        if (noReply(error)) continue;
        throw new EtcdError(
          `etcd at ${hostPort(endpoint)}: ${path} failed: ${(error as Error).message}`,
          undefined,
          { cause: error },
        );
      }
      const text = await response.text();
      let reply: Json;
      try {
        reply = JSON.parse(text) as Json;
      } catch {
        this.#next(index);
        throw new EtcdError(
          `etcd at ${hostPort(endpoint)}: ${path} answered HTTP ${response.status} with something that is not JSON`,
          undefined,
        );
      }
      if (!response.ok || reply.error !== undefined) {
        const message = String(reply.message ?? reply.error ?? `HTTP ${response.status}`);
        const code = typeof reply.code === 'number' ? reply.code : undefined;
        if (authenticated && (code === UNAUTHENTICATED || INVALID_TOKEN.test(message))) {
          // The token expired (etcd's simple tokens last 5 minutes idle): log in again once.
          this.#token = undefined;
          if (tried === 0 && this.#options.username !== undefined) {
            tried--;
            continue;
          }
        }
        // A member without a leader, or one that timed out: the next call goes elsewhere.
        if (code !== NOT_FOUND) this.#next(index);
        const error = new EtcdError(`etcd at ${hostPort(endpoint)}: ${path}: ${message}`, code);
        if (!noLeader(error)) throw error;
        refused = error;
        continue;
      }
      return reply;
    }
    if (refused !== undefined) throw refused;
    throw new EtcdError(
      `etcd: no endpoint could be reached (${this.#endpoints.map(hostPort).join(', ')}): ${(lastError as Error)?.message}`,
      undefined,
      { cause: lastError },
    );
  }

  // Move on from the endpoint that failed, unless another call already did.
  #next(failed: number): void {
    if (this.#current === failed) this.#current = (failed + 1) % this.#endpoints.length;
  }

  async grant(ttlSeconds: number): Promise<{ id: string; ttl: number }> {
    const reply = await this.#post('/v3/lease/grant', { TTL: ttlSeconds });
    return { id: String(reply.ID), ttl: Number(reply.TTL) };
  }

  async revoke(id: string): Promise<boolean> {
    try {
      await this.#post('/v3/lease/revoke', { ID: id });
      return true;
    } catch (error) {
      if (error instanceof EtcdError && error.code === NOT_FOUND) return false;
      throw error;
    }
  }

  async keepAlive(id: string): Promise<number> {
    const reply = await this.#post('/v3/lease/keepalive', { ID: id });
    if (reply.error !== undefined) {
      throw new EtcdError(`etcd: keep-alive failed: ${reply.error.message}`, reply.error.code);
    }
    return Number(reply.result?.TTL ?? 0);
  }

  async timeToLive(id: string): Promise<LeaseTtl> {
    const reply = await this.#post('/v3/lease/timetolive', { ID: id });
    // JSON leaves zeros out: a live lease in its last second has no TTL field.
    return { ttl: Number(reply.TTL ?? 0), granted: Number(reply.grantedTTL ?? 0) };
  }

  async txn(txn: Txn): Promise<TxnResult> {
    const reply = await this.#post('/v3/kv/txn', {
      compare: txn.compare.map(compareJson),
      success: txn.success.map(operationJson),
      failure: txn.failure.map(operationJson),
    });
    const responses: Json[] = reply.responses ?? [];
    return {
      succeeded: reply.succeeded === true,
      revision: BigInt(reply.header?.revision ?? 0),
      results: responses.map((r) => (r.response_range?.kvs ?? []).map(keyValue)),
    };
  }

  watch(prefix: Buffer, handlers: WatchHandlers): StopWatch {
    const controller = new AbortController();
    this.#watches.add(controller);
    const connection: WatchConnection = { held: true, socket: undefined };
    const run = async () => {
      while (!controller.signal.aborted && !this.#closed) {
        const index = this.#current;
        try {
          await this.#watchOnce(
            this.#endpoints[index]!,
            prefix,
            handlers,
            controller.signal,
            connection,
          );
        } catch {
          // Dropped, refused, or the member lost its leader: try the next endpoint.
        }
        handlers.onBroken();
        if (controller.signal.aborted || this.#closed) return;
        this.#next(index);
        await new Promise((resolve) => setTimeout(resolve, WATCH_RETRY_MS).unref());
      }
    };
    void run();
    const stop: StopWatch = () => {
      controller.abort();
      this.#watches.delete(controller);
    };
    stop.hold = (held) => {
      connection.held = held;
      if (held) connection.socket?.ref();
      else connection.socket?.unref();
    };
    return stop;
  }

  // A watch is a response that never ends, on a connection of its own (not `fetch`'s pool) so
  // that its socket can stop holding the process while the watch lingers unused.
  async #watchOnce(
    endpoint: Endpoint,
    prefix: Buffer,
    handlers: WatchHandlers,
    signal: AbortSignal,
    connection: WatchConnection,
  ): Promise<void> {
    const body = JSON.stringify({
      create_request: {
        key: b64(prefix),
        range_end: b64(prefixEnd(prefix)),
        filters: ['NOPUT'],
        prev_kv: true,
      },
    });
    const headers = { ...(await this.#headers()), 'content-length': Buffer.byteLength(body) };
    const send = this.#options.protocol === 'https:' ? httpsRequest : httpRequest;
    const request = send(this.#url(endpoint, '/v3/watch'), {
      method: 'POST',
      headers,
      signal,
      agent: false,
    });
    request.on('socket', (socket) => {
      connection.socket = socket;
      if (!connection.held) socket.unref();
    });
    const response = await new Promise<IncomingMessage>((resolve, reject) => {
      request.once('response', resolve).once('error', reject);
      request.end(body);
    });
    if (response.statusCode !== 200) {
      response.destroy();
      throw new EtcdError(`etcd: watch answered HTTP ${response.statusCode}`, undefined);
    }
    const decoder = new TextDecoder();
    let buffered = '';
    for await (const chunk of response as AsyncIterable<Buffer>) {
      buffered += decoder.decode(chunk, { stream: true });
      let end = buffered.indexOf('\n');
      while (end >= 0) {
        const line = buffered.slice(0, end).trim();
        buffered = buffered.slice(end + 1);
        end = buffered.indexOf('\n');
        if (line === '') continue;
        const message = JSON.parse(line) as Json;
        if (message.error !== undefined)
          throw new EtcdError(String(message.error.message), message.error.code);
        const result = message.result ?? {};
        if (result.canceled === true)
          throw new EtcdError(`etcd: watch canceled: ${result.cancel_reason ?? ''}`, undefined);
        if (result.created === true) handlers.onReady();
        for (const event of Array.isArray(result.events) ? (result.events as Json[]) : []) {
          handlers.onDelete({
            revision: BigInt(event.kv?.mod_revision ?? 0),
            ...(event.prev_kv === undefined ? {} : { previous: keyValue(event.prev_kv) }),
          });
        }
      }
    }
  }

  async close(): Promise<void> {
    this.#closed = true;
    for (const controller of this.#watches) controller.abort();
    this.#watches.clear();
  }
}

function hostPort({ host, port }: Endpoint): string {
  return `${host.includes(':') ? `[${host}]` : host}:${port}`;
}

/** A member's answer that it has no leader: etcd refused the request before reading it. */
function noLeader(error: unknown): boolean {
  return error instanceof EtcdError && error.code === UNAVAILABLE && NO_LEADER.test(error.message);
}

// Refused, or closed before any byte of a reply: try the next member. The request may have
// reached etcd in the second case, but every request the store sends may be repeated: its
// transactions are conditional and confirm what an earlier attempt did, keep-alives and reads
// change nothing, a second grant leaves a lease that expires unused, and a second revoke
// reports a release as not held (false), never the reverse. A timeout is not repeated here:
// the member may be slow rather than gone, and the caller decides.
function noReply(error: unknown): boolean {
  const cause = (error as { cause?: { code?: string } }).cause;
  return (
    cause !== undefined &&
    [
      'ECONNREFUSED',
      'ECONNRESET',
      'EPIPE',
      'EHOSTUNREACH',
      'ENETUNREACH',
      'ENOTFOUND',
      'EAI_AGAIN',
      'UND_ERR_SOCKET',
      'UND_ERR_CONNECT_TIMEOUT',
    ].includes(String(cause.code))
  );
}

function compareJson(c: Compare): Json {
  const field = {
    CREATE: 'create_revision',
    MOD: 'mod_revision',
    LEASE: 'lease',
    VERSION: 'version',
  }[c.target];
  const json: Json = {
    key: b64(c.key),
    target: c.target,
    result: c.result,
    [field]: String(c.value),
  };
  if (c.rangeEnd !== undefined) json.range_end = b64(c.rangeEnd);
  return json;
}

function operationJson(op: Operation): Json {
  if ('put' in op) {
    return {
      request_put: { key: b64(op.put.key), value: b64(op.put.value), lease: op.put.lease },
    };
  }
  if ('delete' in op) return { request_delete_range: { key: b64(op.delete.key) } };
  const { key, rangeEnd, limit, oldestFirst, newestFirst, maxCreateRevision } = op.range;
  const json: Json = { key: b64(key) };
  if (rangeEnd !== undefined) json.range_end = b64(rangeEnd);
  if (limit !== undefined) json.limit = limit;
  if (oldestFirst || newestFirst) {
    json.sort_order = oldestFirst ? 'ASCEND' : 'DESCEND';
    json.sort_target = 'CREATE';
  }
  if (maxCreateRevision !== undefined) json.max_create_revision = String(maxCreateRevision);
  return { request_range: json };
}

function keyValue(kv: Json): KeyValue {
  return {
    key: Buffer.from(kv.key ?? '', 'base64'),
    value: Buffer.from(kv.value ?? '', 'base64'),
    createRevision: BigInt(kv.create_revision ?? 0),
    modRevision: BigInt(kv.mod_revision ?? 0),
    lease: String(kv.lease ?? '0'),
  };
}
