import { Lock, StoreError } from 'cachelock';
import { etcdStore, storeFromUrl } from 'cachelock/etcd';
import { describe, expect, it } from 'vitest';
import { freePort } from '../support/reachable.js';

describe('etcd URLs and errors (no server needed)', () => {
  it('refuses a bad endpoint, parameter or timeout, naming it', () => {
    expect(() => storeFromUrl(new URL('etcd://127.0.0.1:2379?endpoint=a:b:c'))).toThrow(
      /endpoint must be host:port, got "a:b:c"/,
    );
    expect(() => storeFromUrl(new URL('etcd://127.0.0.1:2379?endpoints=x:1'))).toThrow(
      /unknown URL parameter "endpoints" \(known: endpoint, namespace, timeout, watch\)/,
    );
    expect(() => storeFromUrl(new URL('etcd://127.0.0.1:2379?timeout=soon'))).toThrow(
      /timeout must be a positive number of ms, got "soon"/,
    );
    expect(() => etcdStore({ endpoints: ['not a url'] })).toThrow(
      /endpoints must be URLs such as http:\/\/127.0.0.1:2379, got "not a url"/,
    );
    expect(() => etcdStore({} as never)).toThrow(/expected an etcd3 client/);
  });

  it('an unreachable cluster is a StoreError naming the place, never the password', async () => {
    const [a, b] = [await freePort(), await freePort()];
    const url = `etcd://root:s3cret-pass@127.0.0.1:${a}?endpoint=127.0.0.1:${b}&timeout=1000`;
    const error = await Lock.acquire('k', { cache: url }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(StoreError);
    const shown = `${(error as Error).message} ${(error as Error).stack} ${String((error as Error).cause)}`;
    expect(shown).toContain(`etcd://127.0.0.1:${a}`);
    expect(shown).toMatch(/no endpoint could be reached/);
    expect(shown).not.toContain('s3cret-pass');
  });
});
