import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const root = fileURLToPath(new URL('../../', import.meta.url));

/** Compile a TypeScript example with its own tsconfig.json. */
export function compile(example: string): void {
  execFileSync(process.execPath, [join(root, 'node_modules/typescript/bin/tsc'), '-p', example], {
    cwd: root,
    stdio: 'pipe',
  });
}

export interface Started {
  child: ChildProcess;
  /** Everything it printed so far, stdout and stderr. */
  output(): string;
  /** Resolves with the exit code once it exits. */
  exited: Promise<number | null>;
  /** Resolves once its output matches `pattern`, rejects if it exits first or after `ms`. */
  waitFor(pattern: RegExp, ms?: number): Promise<void>;
}

/** Start `node <script> ...args` in the repository root, as the example's README says. */
export function startNode(
  script: string,
  args: string[] = [],
  env: NodeJS.ProcessEnv = {},
): Started {
  const child = spawn(process.execPath, [script, ...args], {
    cwd: root,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let text = '';
  const watchers = new Set<() => void>();
  const onData = (chunk: Buffer) => {
    text += chunk.toString();
    for (const watcher of watchers) watcher();
  };
  child.stdout!.on('data', onData);
  child.stderr!.on('data', onData);
  const exited = new Promise<number | null>((resolve) =>
    child.once('exit', (code) => resolve(code)),
  );
  return {
    child,
    output: () => text,
    exited,
    waitFor(pattern, ms = 15_000) {
      return new Promise((resolve, reject) => {
        const check = () => {
          if (pattern.test(text)) done(resolve);
        };
        const timer = setTimeout(
          () => done(() => reject(new Error(`no ${pattern} within ${ms} ms; output:\n${text}`))),
          ms,
        );
        void exited.then((code) =>
          done(() => reject(new Error(`exited (${code}) before ${pattern}; output:\n${text}`))),
        );
        const done = (settle: () => void) => {
          clearTimeout(timer);
          watchers.delete(check);
          settle();
        };
        watchers.add(check);
        check();
      });
    },
  };
}

/** Stop a child that is still running, by its pid. */
export async function stop(started: Started): Promise<void> {
  if (started.child.exitCode === null && started.child.signalCode === null) {
    started.child.kill('SIGTERM');
    const killer = setTimeout(() => started.child.kill('SIGKILL'), 5_000);
    await started.exited;
    clearTimeout(killer);
  }
}

export interface TickRun {
  instance: string;
  second: number;
}

/** The runs a job appended to `log`, one JSON line each. */
export function readRuns(log: string): TickRun[] {
  return readFileSync(log, 'utf8')
    .trim()
    .split('\n')
    .map((line) => JSON.parse(line) as TickRun);
}

/** Seconds in which more than one run happened, and the seconds that had a run, in order. */
export function tally(runs: TickRun[]): { twice: [number, string[]][]; seconds: number[] } {
  const perSecond = new Map<number, string[]>();
  for (const { instance, second } of runs) {
    perSecond.set(second, [...(perSecond.get(second) ?? []), instance]);
  }
  return {
    twice: [...perSecond].filter(([, instances]) => instances.length > 1),
    seconds: [...perSecond.keys()].sort((x, y) => x - y),
  };
}
