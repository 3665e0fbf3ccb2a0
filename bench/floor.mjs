// The store-free floor of the contended case: a lock that is a token passed between the worker
// processes in strict arrival order, over Unix-domain sockets, with nothing stored anywhere.
// Whatever a store adds to a hand-over comes on top of this.
//
// The main process keeps the line (a tiny lock server): a worker asks it (`A`), and it grants
// the token to the first asker while the key is free (`G <turn>`). Two ways the token moves on:
//
// - through the server (FLOOR_SERVER): the holder tells the server (`R <turn>`), which grants
//   the first in line: two hops, holder -> server -> next;
// - directly (FLOOR_DIRECT): the server tells the holder who is next in line (`N <next> <turn>`)
//   as soon as someone is; the holder hands the token straight to that process's socket
//   (`T <turn>`) and then tells the server (`H <next> <turn>`), off the hand-over's path: one
//   hop, as a store's release ringing its first waiter's bell is. A holder not yet told who is
//   next releases through the server.
//
// Turns number the grants, so a message about an earlier turn (the server named a next waiter
// while its holder was releasing through the server) is recognised and dropped.
//
// With `write` (FLOOR_WRITE), the holder first waits for one write to the store (its own
// connection, the backend's cheapest command that records a holder), then hands on directly: the
// least a lock whose arbiter is that store can cost, since the store must know of the new holder
// before it acts, and the new holder must then hear of it. A store that is the arbiter pays at
// least this one write and one hop between two holders.
import { createConnection, createServer } from 'node:net';
import { join } from 'node:path';

export const FLOOR_DIRECT = 'floor: FIFO token, handed on directly (1 hop)';
export const FLOOR_SERVER = 'floor: FIFO lock server in the main process (2 hops)';
export const FLOOR_WRITE = 'floor: one store write, then handed on directly (1 write + 1 hop)';

/** Calls `onLine(words)` for each newline-ended message on `socket`. */
function lines(socket, onLine) {
  let pending = '';
  socket.setEncoding('latin1');
  socket.on('data', (chunk) => {
    pending += chunk;
    for (let end = pending.indexOf('\n'); end >= 0; end = pending.indexOf('\n')) {
      onLine(pending.slice(0, end).split(' '));
      pending = pending.slice(end + 1);
    }
  });
}

/** The line's keeper, in the main process, listening in `dir`; `direct` names next waiters. */
export function floorServer(dir, direct) {
  const clients = new Map();
  let holder = -1;
  let turn = 0;
  const line = [];
  // A release through the server that came before the hand-over that made its sender the holder.
  let early = [];
  const send = (index, message) => clients.get(index).write(`${message}\n`);
  const grantNext = () => {
    if (line.length === 0) {
      holder = -1;
      return;
    }
    holder = line.shift();
    send(holder, `G ${++turn}`);
    if (direct && line.length > 0) send(holder, `N ${line[0]} ${turn}`);
  };
  const handle = (from, [kind, a, b]) => {
    if (kind === 'A') {
      if (holder < 0) {
        holder = from;
        send(from, `G ${++turn}`);
      } else {
        line.push(from);
        if (direct && line.length === 1) send(holder, `N ${from} ${turn}`);
      }
    } else if (kind === 'R') {
      if (Number(a) !== turn || from !== holder) {
        early.push([from, [kind, a, b]]);
        return;
      }
      grantNext();
    } else if (kind === 'H') {
      const next = Number(a);
      if (from !== holder || line[0] !== next || Number(b) !== turn + 1)
        throw new Error(`floor: hand-over ${from} -> ${next} at turn ${b}, holder ${holder}`);
      line.shift();
      holder = next;
      turn++;
      if (line.length > 0) send(holder, `N ${line[0]} ${turn}`);
      const waiting = early;
      early = [];
      for (const [who, message] of waiting) handle(who, message);
    }
  };
  const server = createServer((socket) => {
    let from;
    lines(socket, (words) => {
      if (words[0] === 'I') clients.set((from = Number(words[1])), socket);
      else handle(from, words);
    });
    socket.on('error', () => socket.destroy());
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(join(dir, 'server.s'), () =>
      resolve({
        close: () => {
          for (const socket of clients.values()) socket.destroy();
          server.close();
        },
      }),
    );
  });
}

/**
 * In worker `index`: `{ withLock, close }` on the server in `dir`; `write`, if given, is awaited
 * before each hand-over, with the index of the next holder (-1: not known yet).
 */
export async function floorLock({ dir, index, write }) {
  const peers = new Map();
  let turn = 0;
  let holding = false;
  let next = -1;
  // Told who is next for a turn not yet reached (the token came directly and is still on its way).
  let toldTurn = -1;
  let toldNext = -1;
  let granted;
  const take = (t) => {
    turn = t;
    holding = true;
    next = toldTurn === t ? toldNext : -1;
    const resolve = granted;
    granted = undefined;
    resolve();
  };
  const own = createServer((socket) => {
    lines(socket, ([kind, t]) => {
      if (kind === 'T') take(Number(t));
    });
  });
  await new Promise((resolve) => own.listen(join(dir, `w${index}.s`), resolve));
  const server = createConnection(join(dir, 'server.s'));
  server.write(`I ${index}\n`);
  lines(server, ([kind, a, b]) => {
    if (kind === 'G') take(Number(a));
    else if (kind === 'N') {
      const t = Number(b);
      if (holding && t === turn) next = Number(a);
      else if (t > turn) {
        toldTurn = t;
        toldNext = Number(a);
      }
    }
  });
  const peer = (to) => {
    let socket = peers.get(to);
    if (socket === undefined) {
      socket = createConnection(join(dir, `w${to}.s`));
      peers.set(to, socket);
    }
    return socket;
  };
  const release = async () => {
    if (write !== undefined) await write(next);
    holding = false;
    if (next >= 0) {
      peer(next).write(`T ${turn + 1}\n`);
      server.write(`H ${next} ${turn + 1}\n`);
    } else {
      server.write(`R ${turn}\n`);
    }
  };
  return {
    withLock: async (fn) => {
      await new Promise((resolve) => {
        granted = resolve;
        server.write('A\n');
      });
      try {
        await fn();
      } finally {
        await release();
      }
    },
    close: () => {
      for (const socket of peers.values()) socket.destroy();
      server.destroy();
      own.close();
    },
  };
}
