/**
 * The etcd keys of one lock, laid out as etcd's own `concurrency.Mutex` (and so its lock
 * service and `etcdctl lock`) lays them out: every acquisition and every waiter puts a key of
 * its own under `<name>/`, and the oldest one there (lowest create revision) holds the lock.
 * A cachelock lock `name` and `etcdctl lock name` therefore exclude each other.
 *
 * The name is the lock's key with `%` and `/` percent-encoded, so that no key's keys fall under
 * another's (`a/` would otherwise hold the keys of `a/b`), after the store's namespace.
 */

const MARK = 'cachelock:';

export interface LockKeys {
  /** `<namespace><name>/`: every key of this lock starts with it. */
  prefix: Buffer;
  /** `prefix` + owner: this acquisition's (or waiter's) own key. */
  mine: Buffer;
}

export function encodeName(key: string): string {
  return key.replace(/[%/]/g, (c) => (c === '%' ? '%25' : '%2F'));
}

export function lockPrefix(namespace: string, key: string): Buffer {
  return Buffer.from(`${namespace}${encodeName(key)}/`);
}

export function lockKeys(namespace: string, key: string, owner: string): LockKeys {
  const prefix = lockPrefix(namespace, key);
  return { prefix, mine: Buffer.concat([prefix, Buffer.from(owner)]) };
}

/** The value of an owner's key. */
export function ownerValue(owner: string): Buffer {
  return Buffer.from(MARK + owner);
}

/** The owner a value names, or `''` for a value cachelock did not write (etcd's own locks). */
export function ownerOf(value: Buffer): string {
  const text = value.toString();
  return text.startsWith(MARK) && text.length > MARK.length ? text.slice(MARK.length) : '';
}
