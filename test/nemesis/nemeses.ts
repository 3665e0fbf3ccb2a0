import { writeFileSync } from 'node:fs';
import type { Deployment } from './backends.js';

/** The faults the suite injects. */
export type NemesisName =
  | 'none'
  | 'pause-holder'
  | 'pause-waiter'
  | 'kill-holder'
  | 'restart-server'
  | 'pause-server'
  | 'cut'
  | 'stall'
  | 'terminate-backends'
  | 'member-down'
  | 'kill-member'
  | 'partition-leader'
  | 'clock-step';

/** A worker process as a nemesis sees it. */
export interface Target {
  id: number;
  pid: number;
  state: 'starting' | 'waiting' | 'holding' | 'idle' | 'done';
  /** When it reported that state, on `performance.now()`. */
  since: number;
  /** The libfaketime offset file of this worker, when the run steps clocks. */
  clockFile?: string;
}

/** What a nemesis may do, given by the runner. */
export interface Arena {
  deployment: Deployment;
  /** The lease as the store keeps it. */
  leaseMs: number;
  /** Live workers, in the state they last reported. */
  workers(): Target[];
  /** SIGKILL a worker (the runner then knows the death was ours) and start a replacement. */
  killAndReplace(target: Target): Promise<void>;
  /**
   * Record a fault from `start` to now (CLOCK_MONOTONIC ns). `tolerated`: the backend promises
   * to keep granting through it, so it does not excuse an idle key.
   */
  fault(nemesis: NemesisName, target: string, start: bigint, tolerated?: boolean): void;
  /** Whether the nemesis should keep going. */
  running(): boolean;
}

export interface Nemesis {
  name: NemesisName;
  /** Whether the workers of a run need a steppable clock (libfaketime). */
  clock?: boolean;
  /** Inject faults until `arena.running()` turns false, then leave everything working. */
  run(arena: Arena): Promise<void>;
}

const now = () => process.hrtime.bigint();
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const between = (low: number, high: number) => low + Math.random() * (high - low);
const pick = <T>(items: T[]): T | undefined => items[Math.floor(Math.random() * items.length)];

/** Repeat `fault` with a quiet spell of half a lease to a lease before each, while the run lasts. */
async function every(arena: Arena, fault: () => Promise<void>): Promise<void> {
  while (arena.running()) {
    await sleep(between(0.5 * arena.leaseMs, arena.leaseMs));
    if (!arena.running()) return;
    await fault();
  }
}

/**
 * SIGSTOP a worker in `state` for `leases` times the lease (low to high), then SIGCONT it: a
 * random one, or the one in that state the longest (the first in a store's line of waiters).
 */
function pauseA(
  name: NemesisName,
  state: Target['state'],
  leases: [number, number],
  choose: 'random' | 'longest' = 'random',
): Nemesis {
  return {
    name,
    run: (arena) =>
      every(arena, async () => {
        const candidates = arena.workers().filter((w) => w.state === state);
        const target =
          choose === 'random' ? pick(candidates) : candidates.sort((a, b) => a.since - b.since)[0];
        if (target === undefined) return;
        const start = now();
        if (!signal(target.pid, 'SIGSTOP')) return;
        try {
          await sleep(between(leases[0] * arena.leaseMs, leases[1] * arena.leaseMs));
        } finally {
          signal(target.pid, 'SIGCONT');
          arena.fault(name, `worker ${target.id}`, start);
        }
      }),
  };
}

function signal(pid: number, name: NodeJS.Signals): boolean {
  try {
    process.kill(pid, name);
    return true;
  } catch {
    return false; // it exited meanwhile
  }
}

function needs<K extends keyof Deployment>(
  deployment: Deployment,
  member: K,
  nemesis: NemesisName,
): NonNullable<Deployment[K]> {
  const value = deployment[member];
  if (value === undefined) throw new Error(`nemesis ${nemesis} needs a backend with a ${member}`);
  return value as NonNullable<Deployment[K]>;
}

export const nemeses: Record<NemesisName, Nemesis> = {
  none: {
    name: 'none',
    run: async (arena) => {
      while (arena.running()) await sleep(50);
    },
  },

  // A holder stops past its lease; another takes the key; the first resumes believing nothing.
  'pause-holder': pauseA('pause-holder', 'holding', [1.5, 2.5]),

  // The first waiter in line stops: a store that hands the key to it meanwhile must not let it
  // believe, when it resumes, that it holds a key that was taken since. Long enough for a
  // hand-off's claim to run out and another waiter to take the key, short enough that the
  // waiter keeps its place in a Redis line (3 s, LINE_MS in src/wait.ts) at a 600 ms lease.
  'pause-waiter': pauseA('pause-waiter', 'waiting', [2.5, 4.5], 'longest'),

  'kill-holder': {
    name: 'kill-holder',
    run: (arena) =>
      every(arena, async () => {
        const target = pick(arena.workers().filter((w) => w.state === 'holding'));
        if (target === undefined) return;
        const start = now();
        await arena.killAndReplace(target);
        arena.fault('kill-holder', `worker ${target.id}`, start);
      }),
  },

  'restart-server': {
    name: 'restart-server',
    run: (arena) => {
      const server = needs(arena.deployment, 'server', 'restart-server');
      return every(arena, async () => {
        const start = now();
        try {
          await server.restart();
        } finally {
          arena.fault('restart-server', 'server', start);
        }
      });
    },
  },

  'pause-server': {
    name: 'pause-server',
    run: (arena) => {
      const server = needs(arena.deployment, 'server', 'pause-server');
      return every(arena, async () => {
        const pid = server.pid();
        if (pid === undefined) return;
        const start = now();
        signal(pid, 'SIGSTOP');
        try {
          await sleep(between(0.5 * arena.leaseMs, 1.5 * arena.leaseMs));
        } finally {
          signal(pid, 'SIGCONT');
          arena.fault('pause-server', 'server', start);
        }
      });
    },
  },

  cut: {
    name: 'cut',
    run: (arena) => {
      const proxy = needs(arena.deployment, 'proxy', 'cut');
      return every(arena, async () => {
        const start = now();
        proxy.cut();
        try {
          await sleep(between(100, arena.leaseMs));
        } finally {
          proxy.restore();
          arena.fault('cut', 'connections', start);
        }
      });
    },
  },

  stall: {
    name: 'stall',
    run: (arena) => {
      const proxy = needs(arena.deployment, 'proxy', 'stall');
      return every(arena, async () => {
        const start = now();
        proxy.stall();
        try {
          await sleep(between(0.5 * arena.leaseMs, 1.5 * arena.leaseMs));
        } finally {
          proxy.restore();
          arena.fault('stall', 'connections', start);
        }
      });
    },
  },

  'terminate-backends': {
    name: 'terminate-backends',
    run: (arena) => {
      const terminate = needs(arena.deployment, 'terminateBackends', 'terminate-backends');
      return every(arena, async () => {
        const start = now();
        try {
          await terminate();
        } finally {
          arena.fault('terminate-backends', 'every connection', start);
        }
      });
    },
  },

  // One of Redlock's three servers dies and comes back empty. A majority remains throughout, so
  // the key must keep changing hands meanwhile.
  'member-down': {
    name: 'member-down',
    run: (arena) => {
      const members = needs(arena.deployment, 'members', 'member-down');
      return every(arena, async () => {
        const member = pick(members)!;
        const start = now();
        await member.kill();
        try {
          await sleep(between(3 * arena.leaseMs, 4 * arena.leaseMs));
        } finally {
          await member.launch();
          arena.fault('member-down', `server ${member.port}`, start, true);
        }
      });
    },
  },

  // etcd: one member of three is SIGKILLed and started again on its data a few leases later.
  // The leader may be the one: the others elect another, and clients move to a live member.
  'kill-member': {
    name: 'kill-member',
    run: (arena) => {
      const cluster = needs(arena.deployment, 'cluster', 'kill-member');
      return every(arena, async () => {
        const index = Math.floor(Math.random() * cluster.members.length);
        const start = now();
        await cluster.kill(index);
        try {
          await sleep(between(2 * arena.leaseMs, 3 * arena.leaseMs));
        } finally {
          await cluster.restart(index);
          arena.fault('kill-member', `member ${index}`, start);
        }
      });
    },
  },

  // etcd: the leader's proxies drop every connection from its peers and its clients, so a
  // majority elects another leader while the old one may still believe it leads.
  'partition-leader': {
    name: 'partition-leader',
    run: (arena) => {
      const cluster = needs(arena.deployment, 'cluster', 'partition-leader');
      return every(arena, async () => {
        const index = await cluster.leader();
        const start = now();
        cluster.partition(index);
        try {
          await sleep(between(2 * arena.leaseMs, 3 * arena.leaseMs));
        } finally {
          cluster.heal(index);
          await cluster.waitHealthy();
          arena.fault('partition-leader', `member ${index}`, start);
        }
      });
    },
  },

  // One worker's wall clock jumps forward past the lease (libfaketime), as after an NTP step,
  // and later back; its monotonic clock (and every other process's clock) runs on unchanged.
  'clock-step': {
    name: 'clock-step',
    clock: true,
    run: (arena) =>
      every(arena, async () => {
        const target = pick(arena.workers().filter((w) => w.clockFile !== undefined));
        if (target === undefined) return;
        const stepMs = Math.round(3 * arena.leaseMs);
        const start = now();
        writeFileSync(target.clockFile!, `+${stepMs / 1_000}s`);
        try {
          await sleep(between(arena.leaseMs, 2 * arena.leaseMs));
        } finally {
          writeFileSync(target.clockFile!, '+0');
          // Leases written by the stepped clock look that much longer to the others.
          await sleep(stepMs);
          arena.fault('clock-step', `worker ${target.id}`, start);
        }
      }),
  },
};
