/** An operation in flight: settled by its reply, or rejected by the sweep past its deadline. */
interface Pending {
  readonly deadline: number;
  readonly reject: (error: Error) => void;
  done: boolean;
}

/**
 * Rejects operations that have not settled within `timeoutMs`, give or take a quarter of it.
 * One sweeping timer for all of them: a timer per command would cost more than the command's
 * own bookkeeping on the fast path. Every operation gets the same timeout, so the queue is in
 * deadline order and the sweep looks only at its head; settled entries leave from the head as
 * new ones arrive, which keeps the queue as long as what is in flight.
 */
export class Deadlines {
  /**
   * The operations in flight, oldest first, in `queue[head..tail)`. Slots before `head` are
   * cleared as it passes them, and the array itself is kept: emptied and refilled as one
   * operation follows another, it is not reallocated each time.
   */
  private readonly queue: (Pending | undefined)[] = [];
  private head = 0;
  private tail = 0;
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly timeoutMs: number) {}

  /**
   * `convert(reply)` once `operation` resolves, or its error, or a rejection past the deadline.
   * A failure that `again` answers with another operation is replaced by it, within the same
   * deadline, once; none is tried past the deadline.
   */
  run<T>(
    operation: Promise<unknown>,
    convert: (reply: unknown) => T,
    again?: (error: unknown) => Promise<unknown> | undefined,
  ): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const entry: Pending = { deadline: performance.now() + this.timeoutMs, reject, done: false };
      this.push(entry);
      const settle = (reply: unknown) => {
        entry.done = true;
        try {
          resolve(convert(reply));
        } catch (error) {
          reject(error);
        }
      };
      const fail = (error: unknown) => {
        const next = entry.done ? undefined : again?.(error);
        again = undefined;
        if (next !== undefined) {
          next.then(settle, fail);
          return;
        }
        entry.done = true;
        reject(error);
      };
      operation.then(settle, fail);
    });
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  private push(entry: Pending): void {
    const queue = this.queue;
    let head = this.head;
    while (head < this.tail && queue[head]!.done) queue[head++] = undefined;
    if (head === this.tail) {
      head = 0;
      this.tail = 0;
    } else if (head > 1024 && head * 2 > this.tail) {
      // Mostly settled: the live part moves to the front, once per that many operations.
      queue.copyWithin(0, head, this.tail);
      queue.fill(undefined, this.tail - head, this.tail);
      this.tail -= head;
      head = 0;
    }
    this.head = head;
    queue[this.tail++] = entry;
    if (this.timer === undefined) {
      this.timer = setInterval(() => this.sweep(), Math.max(10, this.timeoutMs / 4));
      this.timer.unref();
    }
  }

  private sweep(): void {
    const now = performance.now();
    const queue = this.queue;
    while (this.head < this.tail) {
      const entry = queue[this.head]!;
      if (!entry.done) {
        if (entry.deadline > now) return;
        entry.done = true;
        entry.reject(new Error(`Redis did not reply within ${this.timeoutMs} ms`));
      }
      queue[this.head++] = undefined;
    }
    this.head = 0;
    this.tail = 0;
    this.stop();
  }
}
