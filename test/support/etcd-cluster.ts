import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type Server, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from './reachable.js';
import { TcpProxy } from './tcp-proxy.js';

// Short raft timings so that a lost member is noticed in about a second, while the smallest
// lease etcd grants ((3/2) x election timeout, rounded up to a second) stays 1 s.
const HEARTBEAT_MS = 50;
const ELECTION_MS = 500;

interface Member {
  name: string;
  clientPort: number;
  peerPort: number;
  /** What the others dial for this member's raft traffic. */
  peerProxy: PeerProxy;
  /** Its raft ID in hex, as it names itself to its peers (`X-Server-From`). */
  id: string | undefined;
  /** What clients dial for this member: cut it to take the member away from clients. */
  clientProxy: TcpProxy;
  dir: string;
  child: ChildProcess | undefined;
}

/**
 * A throwaway etcd cluster on free loopback ports, in temp folders, each member behind a
 * loopback TCP proxy for its peers and one for its clients, so that a test can kill, pause or
 * partition one member. Members are ended by their pids; nothing else is touched.
 */
export class EtcdCluster {
  private constructor(
    private readonly root: string,
    readonly members: Member[],
  ) {}

  static async start(size = 3): Promise<EtcdCluster> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await EtcdCluster.startOnce(size);
      } catch (error) {
        // A port found free was taken by another process (another test's server or proxy)
        // before etcd bound it: start again on new ports.
        if (attempt >= 3 || !String((error as Error).message).includes('address already in use')) {
          throw error;
        }
      }
    }
  }

  private static async startOnce(size: number): Promise<EtcdCluster> {
    const root = mkdtempSync(join(tmpdir(), 'cachelock-etcd-'));
    const members: Member[] = [];
    try {
      for (let i = 0; i < size; i++) {
        const clientPort = await freePort();
        const peerPort = await freePort();
        members.push({
          name: `m${i}`,
          clientPort,
          peerPort,
          peerProxy: await PeerProxy.start(peerPort),
          clientProxy: await TcpProxy.start(clientPort),
          id: undefined,
          dir: join(root, `m${i}`),
          child: undefined,
        });
      }
      const cluster = new EtcdCluster(root, members);
      for (const index of members.keys()) cluster.launch(index);
      await cluster.waitHealthy();
      return cluster;
    } catch (error) {
      for (const member of members) {
        member.child?.kill('SIGKILL');
        await member.peerProxy.close();
        await member.clientProxy.close();
      }
      rmSync(root, { recursive: true, force: true });
      throw error;
    }
  }

  /** `etcd://` URL naming every member (through its client proxy). */
  get url(): string {
    const [first, ...rest] = this.members.map((m) => `127.0.0.1:${m.clientProxy.port}`);
    const query = rest.map((hostPort) => `endpoint=${hostPort}`).join('&');
    return `etcd://${first}${query ? `?${query}` : ''}`;
  }

  /** `http://` URLs of every member (through its client proxy), for etcd3 and fetch. */
  get hosts(): string[] {
    return this.members.map((m) => `http://127.0.0.1:${m.clientProxy.port}`);
  }

  /** A member's client URL without the proxy. */
  direct(index: number): string {
    return `http://127.0.0.1:${this.members[index]!.clientPort}`;
  }

  private launch(index: number): void {
    const member = this.members[index]!;
    const cluster = this.members
      .map((m) => `${m.name}=http://127.0.0.1:${m.peerProxy.port}`)
      .join(',');
    const log = openSync(`${member.dir}.log`, 'a');
    member.child = spawn(
      'etcd',
      [
        '--name',
        member.name,
        '--data-dir',
        member.dir,
        '--listen-client-urls',
        `http://127.0.0.1:${member.clientPort}`,
        '--advertise-client-urls',
        `http://127.0.0.1:${member.clientProxy.port}`,
        '--listen-peer-urls',
        `http://127.0.0.1:${member.peerPort}`,
        '--initial-advertise-peer-urls',
        `http://127.0.0.1:${member.peerProxy.port}`,
        '--initial-cluster',
        cluster,
        '--initial-cluster-token',
        `cachelock-${process.pid}-${this.members[0]!.peerPort}`,
        '--initial-cluster-state',
        'new',
        '--heartbeat-interval',
        String(HEARTBEAT_MS),
        '--election-timeout',
        String(ELECTION_MS),
        // A partitioned member that campaigns must not unseat the leader when it comes back.
        '--pre-vote',
        '--logger',
        'zap',
        '--log-level',
        'warn',
      ],
      { stdio: ['ignore', log, log] },
    );
  }

  /** The member's own report: whether it is healthy, and who it thinks leads. */
  async status(index: number): Promise<{ leader: string; member: string } | undefined> {
    try {
      const response = await fetch(`${this.direct(index)}/v3/maintenance/status`, {
        method: 'POST',
        body: '{}',
        signal: AbortSignal.timeout(1_000),
      });
      const reply = (await response.json()) as {
        leader?: string;
        header?: { member_id?: string };
      };
      if (reply.leader === undefined || reply.leader === '0') return undefined;
      this.members[index]!.id ??= BigInt(String(reply.header?.member_id)).toString(16);
      return { leader: String(reply.leader), member: String(reply.header?.member_id) };
    } catch {
      return undefined;
    }
  }

  /** The index of the member that leads, as a majority of running members sees it. */
  async leader(timeoutMs = 15_000): Promise<number> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const statuses = await Promise.all(this.members.map((_, i) => this.status(i)));
      const leaderId = statuses.find((s) => s !== undefined && s.leader === s.member)?.leader;
      const agree = statuses.filter((s) => s?.leader === leaderId).length;
      if (leaderId !== undefined && agree * 2 > this.members.length) {
        return statuses.findIndex((s) => s?.member === leaderId);
      }
      if (Date.now() > deadline) throw new Error('the etcd cluster has no leader');
      await sleep(100);
    }
  }

  async waitHealthy(timeoutMs = 30_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const statuses = await Promise.all(
        this.members.map((m, i) => (m.child ? this.status(i) : Promise.resolve({}))),
      );
      if (statuses.every((s) => s !== undefined)) {
        await this.leader();
        return;
      }
      for (const member of this.members) {
        if (member.child && member.child.exitCode !== null) {
          throw new Error(
            `etcd ${member.name} exited with ${member.child.exitCode}: ${this.log(member)}`,
          );
        }
      }
      if (Date.now() > deadline) {
        throw new Error(`the etcd cluster did not become healthy: ${this.log(this.members[0]!)}`);
      }
      await sleep(100);
    }
  }

  private log(member: Member): string {
    try {
      return readFileSync(`${member.dir}.log`, 'utf8').slice(-2_000);
    } catch {
      return '';
    }
  }

  /** SIGKILL one member, as a crash does. */
  async kill(index: number): Promise<void> {
    await this.signal(index, 'SIGKILL');
    this.members[index]!.child = undefined;
  }

  /** Start a killed member again on its data. */
  async restart(index: number): Promise<void> {
    await this.kill(index);
    this.launch(index);
    await this.waitHealthy();
  }

  /** SIGSTOP / SIGCONT one member. */
  pause(index: number): void {
    this.members[index]!.child?.kill('SIGSTOP');
  }

  resume(index: number): void {
    this.members[index]!.child?.kill('SIGCONT');
  }

  /**
   * Cut the member off from its peers both ways (its own proxy drops every peer, the others'
   * drop what it sends them) and from its clients, until `heal`.
   */
  partition(index: number): void {
    const member = this.members[index]!;
    if (member.id === undefined) throw new Error(`etcd ${member.name}: raft ID not known yet`);
    for (const other of this.members) {
      if (other === member) other.peerProxy.isolate();
      else other.peerProxy.block(member.id);
    }
    member.clientProxy.cut();
  }

  heal(index: number): void {
    const member = this.members[index]!;
    for (const other of this.members) {
      if (other === member) other.peerProxy.restore();
      else if (member.id !== undefined) other.peerProxy.unblock(member.id);
    }
    member.clientProxy.restore();
  }

  private async signal(index: number, signal: NodeJS.Signals): Promise<void> {
    const child = this.members[index]!.child;
    if (child === undefined || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGCONT');
    child.kill(signal);
    await exited;
  }

  async dispose(): Promise<void> {
    for (const index of this.members.keys()) await this.kill(index);
    for (const member of this.members) {
      await member.peerProxy.close();
      await member.clientProxy.close();
    }
    rmSync(this.root, { recursive: true, force: true });
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * A loopback proxy for etcd's peer port that knows who is talking: every raft request names its
 * sender in `X-Server-From`, so the proxy can drop one member's traffic to this one (a
 * partition both ways needs that: the others still dial the partitioned member's peers).
 */
class PeerProxy {
  private readonly sockets = new Map<Socket, { from: string | undefined; upstream: Socket }>();
  private readonly blocked = new Set<string>();
  private isolated = false;

  private constructor(
    private readonly server: Server,
    readonly port: number,
  ) {}

  static async start(targetPort: number): Promise<PeerProxy> {
    let proxy: PeerProxy | undefined;
    const server = createServer((client) => proxy!.accept(client, targetPort));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => resolve());
    });
    const address = server.address();
    proxy = new PeerProxy(server, typeof address === 'object' && address ? address.port : 0);
    return proxy;
  }

  /** Drop every connection and refuse new ones. */
  isolate(): void {
    this.isolated = true;
    for (const [client, { upstream }] of this.sockets) {
      client.destroy();
      upstream.destroy();
    }
  }

  /** Drop and refuse what member `from` (hex raft ID) sends. */
  block(from: string): void {
    this.blocked.add(from);
    for (const [client, state] of this.sockets) {
      if (state.from === from) {
        client.destroy();
        state.upstream.destroy();
      }
    }
  }

  unblock(from: string): void {
    this.blocked.delete(from);
  }

  restore(): void {
    this.isolated = false;
  }

  async close(): Promise<void> {
    this.isolate();
    await new Promise((resolve) => this.server.close(resolve));
  }

  private accept(client: Socket, port: number): void {
    if (this.isolated) {
      client.destroy();
      return;
    }
    const upstream = new Socket();
    const state = { from: undefined as string | undefined, upstream };
    this.sockets.set(client, state);
    const end = () => {
      client.destroy();
      upstream.destroy();
      this.sockets.delete(client);
    };
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
    upstream.connect(port, '127.0.0.1');
    let head = '';
    client.on('data', (chunk: Buffer) => {
      if (state.from === undefined) {
        head += chunk.toString('latin1');
        const match = /\r\nX-Server-From: *([0-9a-f]+)\r\n/i.exec(head);
        if (match) state.from = match[1]!.toLowerCase();
        else if (head.length > 16_384) state.from = '';
      }
      if (this.isolated || (state.from !== undefined && this.blocked.has(state.from))) {
        end();
        return;
      }
      upstream.write(chunk);
    });
    upstream.on('data', (chunk: Buffer) => {
      if (this.isolated || (state.from !== undefined && this.blocked.has(state.from))) {
        end();
        return;
      }
      client.write(chunk);
    });
  }
}
