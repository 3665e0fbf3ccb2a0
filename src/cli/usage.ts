import { readFileSync, realpathSync } from 'node:fs';
import { dirname, join } from 'node:path';

/** The usage lines, printed after a usage error. */
export const SYNOPSIS = `Usage:
  cachelock run <key> [--cache URL] [--ttl 30s] [--wait 0|10s|forever] [--hold-at-least D]
                      [--conflict-exit-code 75] [--quiet] [--kill-after 10s] [--lost-signal TERM]
                      [--permits N] [--prefix P] -- <command> [args...]
  cachelock status <key> [--cache URL] [--prefix P] [--permits N] [--json]
  cachelock release <key> --force [--cache URL] [--prefix P]
  cachelock --help | --version
A key that begins with "-" is given as --key=-k (or --key -k) in place of <key>.`;

export const HELP = `cachelock: run a command under a lock, on one machine or many.

${SYNOPSIS}

run      Take the lock, run the command while holding it (the lease is extended while it
         runs), release it when the command ends, and exit with the command's status.
status   Say who holds the lock, for how much longer and its fence, or that it is free.
         With --permits N: how many of the N permits are held, and by whom.
release  --force: remove a stuck lock whatever its owner, and say whose it was. A run
         holding it notices within about a second and stops its command (exit 70).

Options:
  --cache URL               where the locks live: redis://, rediss://, valkey://, postgres://,
                            mysql://, mariadb://, memcached://, sqlite:/path (default:
                            $CACHELOCK_URL, else the SQLite file $CACHELOCK_DB, else
                            $XDG_STATE_HOME/cachelock/locks.sqlite, else
                            ~/.local/state/cachelock/locks.sqlite)
  --key K                   the key, in place of <key>: for a key that begins with "-"
                            (--key=-k or --key -k; status and release also take -- -k)
  --ttl D                   the lease (default 30s, at least 1s): if cachelock dies or hangs,
                            the lock is free again after at most this long
  --wait D                  how long to wait for a held lock: 0 (default), 10s, forever
  --hold-at-least D         keep the lock at least this long after it was taken, so a quick
                            job does not run again elsewhere in the same tick (default 0)
  --conflict-exit-code N    exit status when the lock is held or the wait ran out (default 75)
  -q, --quiet               no waiting line and no message when the lock is held
  --kill-after D            if the lease is lost: how long after --lost-signal to send SIGKILL
                            (default 10s)
  --lost-signal SIG         if the lease is lost: the signal that asks the command to stop
                            (default TERM)
  --permits N               run: at most N commands at once on the key, across every host
                            (a semaphore; an integer >= 1). status: show that semaphore's
                            holders. A key used with --permits is not the key without it
  --prefix P                namespace of the keys in the cache (default cachelock:)
  --json                    status: print one JSON object: {"key","held":false} or
                            {"key","held":true,"owner","host","pid","ttlMs","fence"} (fence is
                            a string of digits, or null where the cache has none); with
                            --permits: {"key","permits","free","holders":[{"owner",...}]}
  --force                   release: required, since it removes another process's lock
  -h, --help                this text
  --version                 the version of cachelock

Durations take a unit: 500ms, 30s, 1.5m, 2h, 1d (a bare 0 is allowed).

The default SQLite file is yours alone: it and its folder are made 0600 and 0700, and refused
if either is a symbolic link or belongs to another user, if group or others can write to the
folder, or read or write the file. A file given with sqlite:/path may be shared on purpose:
there only a file or folder anyone can write to is refused (a sticky folder such as /tmp is
allowed).

The command gets CACHELOCK_KEY (the key) and CACHELOCK_FENCE (the fencing token, which grows
with every acquisition of the key; empty if the cache has none) in its environment. SIGINT,
SIGTERM and SIGHUP sent to cachelock are passed on to the command.

Exit status:
  the command's     its own exit status, or 128+N if it was killed by signal N
  0                 status: held or free; release: removed, or it was not held
  64                usage error (unknown option, bad duration, unknown URL scheme, no --)
  69                the cache could not be reached or opened, or its file was refused
  70                the lease was lost while the command ran, and the command was stopped
  75                the lock was held (every permit, with --permits), or the wait ran out
                    (--conflict-exit-code)
  126, 127          the command could not be executed, or was not found
  128+N             cachelock got signal N while waiting; the command was not run

Example (crontab): back up at most once at a time across all hosts sharing the Redis:
  */5 * * * * cachelock run backup --cache redis://cache:6379 --quiet -- /usr/local/bin/backup

Example: at most 3 renders at once across the hosts, each waiting up to 10 minutes for a turn:
  cachelock run render --permits 3 --wait 10m --cache redis://cache:6379 -- ./render.sh`;

/**
 * The version in package.json, found from the running file (dist/cli/main.js, two levels below
 * it). The bin only ever runs as the main script, so argv[1] names that file; the
 * real path follows the symlink npm puts in node_modules/.bin.
 */
export function version(): string {
  let dir = dirname(realpathSync(process.argv[1] ?? '.'));
  for (;;) {
    try {
      const manifest = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as {
        name?: string;
        version?: string;
      };
      if (manifest.name === 'cachelock' && manifest.version) return manifest.version;
    } catch {
      // No package.json here: keep going up.
    }
    const parent = dirname(dir);
    if (parent === dir) return 'unknown';
    dir = parent;
  }
}
