import {
  closeSync,
  constants,
  fstatSync,
  lstatSync,
  mkdirSync,
  openSync,
  type Stats,
  statSync,
} from 'node:fs';
import { dirname } from 'node:path';

/** More missing folders than any real path has: the walk up stops here whatever happens. */
const MAX_NEW_FOLDERS = 64;

/** SQLite's companions of a database file, made with the file's own permissions. */
const COMPANIONS = ['-wal', '-shm', '-journal'];

export interface FileRules {
  /**
   * The file holds this user's locks only: its folder and file must be this user's, out of reach
   * of group and others, and neither may be a symbolic link.
   */
  private: boolean;
}

/**
 * Make the database's missing folders (0700) and file (0600), and refuse an existing one that
 * is unsafe, with an error that names the path and what is wrong. Every path ends quickly:
 * folders are made one at a time (a recursive mkdirSync spins forever where mkdir answers
 * ENOENT, as under /proc) and the file is opened without blocking (a FIFO would wait for a
 * writer). Without `private`, a file shared on purpose (another owner, group access, a link)
 * is accepted; only what anyone on the machine could write is refused.
 */
export function prepareFile(path: string, rules: FileRules): void {
  const folder = dirname(path);
  makeFolders(folder, path);
  checkFolder(folder, path, rules);
  const nofollow = rules.private ? constants.O_NOFOLLOW : 0;
  let fd: number;
  try {
    fd = openSync(
      path,
      constants.O_RDONLY | constants.O_CREAT | constants.O_NONBLOCK | (nofollow ?? 0),
      0o600,
    );
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ELOOP' && rules.private) {
      throw refused(path, 'it is a symbolic link; point the path at the file itself');
    }
    throw new Error(`cachelock/sqlite: cannot open ${path}: ${message(error)}`, { cause: error });
  }
  try {
    checkFile(path, fstatSync(fd), rules);
  } finally {
    closeSync(fd);
  }
  for (const suffix of COMPANIONS) {
    const companion = path + suffix;
    let stats: Stats;
    try {
      stats = rules.private ? lstatSync(companion) : statSync(companion);
    } catch {
      continue; // absent: SQLite makes it with the file's permissions
    }
    if (stats.isSymbolicLink()) throw refused(companion, 'it is a symbolic link');
    checkFile(companion, stats, rules);
  }
}

/** Create `folder` and its missing parents one step at a time, each 0700. */
function makeFolders(folder: string, path: string): void {
  const missing: string[] = [];
  for (let dir = folder; ; ) {
    let stats: Stats;
    try {
      stats = statSync(dir);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') {
        throw new Error(
          `cachelock/sqlite: cannot reach the folder ${dir} of ${path}: ${message(error)}`,
          {
            cause: error,
          },
        );
      }
      missing.push(dir);
      const parent = dirname(dir);
      if (parent === dir || missing.length > MAX_NEW_FOLDERS) {
        throw new Error(`cachelock/sqlite: cannot create the folder ${folder} of ${path}`);
      }
      dir = parent;
      continue;
    }
    if (!stats.isDirectory()) {
      throw new Error(`cachelock/sqlite: cannot use ${path}: ${dir} is not a folder`);
    }
    break;
  }
  for (const dir of missing.reverse()) {
    try {
      mkdirSync(dir, { mode: 0o700 });
    } catch (error) {
      // Another process made it meanwhile: checked like any existing folder below.
      if ((error as NodeJS.ErrnoException).code === 'EEXIST') continue;
      throw new Error(
        `cachelock/sqlite: cannot create the folder ${dir} of ${path}: ${message(error)}`,
        {
          cause: error,
        },
      );
    }
  }
}

function checkFolder(folder: string, path: string, rules: FileRules): void {
  const stats = rules.private ? lstatSync(folder) : statSync(folder);
  if (stats.isSymbolicLink()) {
    throw refused(folder, `it is a symbolic link, and it holds ${path}`);
  }
  if (!stats.isDirectory()) throw refused(folder, 'it is not a folder');
  if (!posix()) return;
  const mode = stats.mode & 0o7777;
  if (rules.private) {
    if (stats.uid !== process.getuid!()) throw refused(folder, notYours(stats));
    if (mode & 0o022) {
      throw refused(
        folder,
        `group or others can write to it (mode ${octal(mode)}), so they could replace ${path}; chmod 700 it`,
      );
    }
  } else if (mode & 0o002 && !(mode & 0o1000)) {
    // Others may add files to a sticky folder such as /tmp, but not replace ours.
    throw refused(
      folder,
      `anyone can write to it (mode ${octal(mode)}), so anyone could replace ${path}; chmod o-w it`,
    );
  }
}

function checkFile(path: string, stats: Stats, rules: FileRules): void {
  if (!stats.isFile()) throw refused(path, 'it is not a regular file');
  if (!posix()) return;
  const mode = stats.mode & 0o7777;
  if (rules.private) {
    if (stats.uid !== process.getuid!()) throw refused(path, notYours(stats));
    if (mode & 0o066) {
      throw refused(
        path,
        `group or others can read or write it (mode ${octal(mode)}); chmod 600 it`,
      );
    }
  } else if (mode & 0o002) {
    throw refused(
      path,
      `anyone can write it (mode ${octal(mode)}), and so take or remove any lock; chmod o-w it`,
    );
  }
}

/** Modes and owners exist where the process has a uid (not on Windows). */
function posix(): boolean {
  return typeof process.getuid === 'function';
}

function notYours(stats: Stats): string {
  return `it belongs to uid ${stats.uid}, not to this user (uid ${process.getuid!()})`;
}

function refused(path: string, why: string): Error {
  return new Error(`cachelock/sqlite: refusing ${path}: ${why}`);
}

function octal(mode: number): string {
  return mode.toString(8).padStart(4, '0');
}

function message(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
