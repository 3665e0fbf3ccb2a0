import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { freePort } from './reachable.js';
import { RedisServer } from './redis-server.js';

const run = promisify(execFile);

/**
 * A throwaway certificate authority and a server certificate for 127.0.0.1 and localhost that
 * it signed, made with openssl in a temp folder. Nothing trusts the CA unless told to: a client
 * given `NODE_EXTRA_CA_CERTS=<ca>` does, any other refuses the server.
 */
export class TestCertificates {
  private constructor(readonly dir: string) {}

  static async make(): Promise<TestCertificates> {
    const dir = mkdtempSync(join(tmpdir(), 'cachelock-tls-'));
    const certs = new TestCertificates(dir);
    const openssl = (...args: string[]) => run('openssl', args, { cwd: dir, timeout: 30_000 });
    try {
      await openssl(
        'req',
        '-x509',
        '-newkey',
        'rsa:2048',
        '-nodes',
        '-keyout',
        'ca.key',
        '-out',
        'ca.crt',
        '-days',
        '2',
        '-subj',
        '/CN=cachelock test CA',
      );
      await openssl(
        'req',
        '-newkey',
        'rsa:2048',
        '-nodes',
        '-keyout',
        'server.key',
        '-out',
        'server.csr',
        '-subj',
        '/CN=127.0.0.1',
      );
      writeFileSync(join(dir, 'san.cnf'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\n');
      await openssl(
        'x509',
        '-req',
        '-in',
        'server.csr',
        '-CA',
        'ca.crt',
        '-CAkey',
        'ca.key',
        '-CAcreateserial',
        '-out',
        'server.crt',
        '-days',
        '2',
        '-extfile',
        'san.cnf',
      );
    } catch (error) {
      certs.dispose();
      throw error;
    }
    return certs;
  }

  get ca(): string {
    return join(this.dir, 'ca.crt');
  }

  get cert(): string {
    return join(this.dir, 'server.crt');
  }

  get key(): string {
    return join(this.dir, 'server.key');
  }

  dispose(): void {
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** A throwaway redis-server that also speaks TLS on `tlsPort`, with the certificate given. */
export async function startTlsRedis(
  certs: TestCertificates,
): Promise<{ server: RedisServer; tlsPort: number }> {
  const tlsPort = await freePort();
  const server = await RedisServer.start([
    '--tls-port',
    String(tlsPort),
    '--tls-cert-file',
    certs.cert,
    '--tls-key-file',
    certs.key,
    '--tls-ca-cert-file',
    certs.ca,
    '--tls-auth-clients',
    'no',
  ]);
  return { server, tlsPort };
}

/** A throwaway one-member etcd whose client port speaks TLS (HTTPS) only; ended by its pid. */
export class TlsEtcd {
  private constructor(
    readonly port: number,
    private readonly dir: string,
    private readonly child: ChildProcess,
  ) {}

  static async start(certs: TestCertificates): Promise<TlsEtcd> {
    const dir = mkdtempSync(join(tmpdir(), 'cachelock-etcds-'));
    const [port, peerPort] = [await freePort(), await freePort()];
    const log = openSync(join(dir, 'log'), 'a');
    const peer = `http://127.0.0.1:${peerPort}`;
    const child = spawn(
      'etcd',
      [
        '--name',
        'tls',
        '--data-dir',
        join(dir, 'data'),
        '--listen-client-urls',
        `https://127.0.0.1:${port}`,
        '--advertise-client-urls',
        `https://127.0.0.1:${port}`,
        '--cert-file',
        certs.cert,
        '--key-file',
        certs.key,
        '--listen-peer-urls',
        peer,
        '--initial-advertise-peer-urls',
        peer,
        '--initial-cluster',
        `tls=${peer}`,
        '--log-level',
        'warn',
      ],
      { stdio: ['ignore', log, log] },
    );
    const etcd = new TlsEtcd(port, dir, child);
    const ca = readFileSync(certs.ca);
    const deadline = Date.now() + 30_000;
    while (!(await healthy(port, ca))) {
      if (child.exitCode !== null || Date.now() > deadline) {
        const output = readFileSync(join(dir, 'log'), 'utf8').slice(-2_000);
        await etcd.dispose();
        throw new Error(`etcd with TLS on ${port} did not become healthy: ${output}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    return etcd;
  }

  async dispose(): Promise<void> {
    const child = this.child;
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGKILL');
      await exited;
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** Whether etcd answers `/health` as healthy over TLS, trusting `ca`. */
function healthy(port: number, ca: Buffer): Promise<boolean> {
  return new Promise((resolve) => {
    const req = request(
      { host: '127.0.0.1', port, path: '/health', ca, timeout: 1_000 },
      (response) => {
        let body = '';
        response.setEncoding('utf8').on('data', (chunk: string) => {
          body += chunk;
        });
        response.on('end', () => resolve(/"health":\s*"true"/.test(body)));
      },
    );
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(false));
    req.end();
  });
}
