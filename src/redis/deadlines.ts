interface Pending {
  deadline: number;
  reject: (error: Error) => void;
}

/**
 * Rejects operations that have not settled within `timeoutMs`, give or take a quarter of it.
 * One sweeping timer for all of them: a timer per command would cost more than the command's
 * own bookkeeping on the fast path.
 */
export class Deadlines {
  private readonly pending = new Set<Pending>();
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly timeoutMs: number) {}

  bound<T>(operation: Promise<T>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const entry: Pending = { deadline: performance.now() + this.timeoutMs, reject };
      this.pending.add(entry);
      this.start();
      operation.then(
        (value) => {
          this.pending.delete(entry);
          resolve(value);
        },
        (error) => {
          this.pending.delete(entry);
          reject(error);
        },
      );
    });
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  private start(): void {
    if (this.timer !== undefined) return;
    this.timer = setInterval(() => this.sweep(), Math.max(10, this.timeoutMs / 4));
    this.timer.unref();
  }

  private sweep(): void {
    const now = performance.now();
    for (const entry of this.pending) {
      if (entry.deadline > now) continue;
      this.pending.delete(entry);
      entry.reject(new Error(`Redis did not reply within ${this.timeoutMs} ms`));
    }
    if (this.pending.size === 0) this.stop();
  }
}
