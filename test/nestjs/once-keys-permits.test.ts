import 'reflect-metadata';
import { randomUUID } from 'node:crypto';
import { Injectable, Module } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { configure, currentLock, Lock, Permit } from 'cachelock';
import { CachelockModule, Once } from 'cachelock/nestjs';
import { afterEach, describe, expect, it, vi } from 'vitest';

afterEach(() => {
  configure(null);
});

const p = randomUUID().slice(0, 8);

function gate() {
  let open!: () => void;
  const opened = new Promise<void>((resolve) => {
    open = resolve;
  });
  return { open, opened };
}

describe('@Once with several keys and with permits (memory store, one process)', () => {
  it('holds every key of a method, and at most N calls of a permits method', async () => {
    const transferGate = gate();
    const exportGate = gate();
    let exporting = 0;

    @Injectable()
    class Accounts {
      @Once({ key: [`${p}-acct-{from}`, `${p}-acct-{to}`] })
      async transfer(from: number, to: number) {
        expect((currentLock() as Lock).keys).toEqual([`${p}-acct-${from}`, `${p}-acct-${to}`]);
        await transferGate.opened;
        return `${from}->${to}`;
      }

      @Once({ key: `${p}-export-{tenant}`, permits: 2 })
      async export(tenant: string) {
        expect(currentLock()).toBeInstanceOf(Permit);
        exporting++;
        await exportGate.opened;
        exporting--;
        return tenant;
      }
    }
    @Module({ imports: [CachelockModule.forRoot()], providers: [Accounts] })
    class AppModule {}

    const app = await NestFactory.createApplicationContext(AppModule, { logger: false });
    try {
      const accounts = app.get(Accounts);
      const transfer = accounts.transfer as typeof accounts.transfer & {
        keyFor(from: number, to: number): string[];
        isLocked(from: number, to: number): Promise<boolean>;
      };
      expect(transfer.keyFor(1, 2)).toEqual([`${p}-acct-1`, `${p}-acct-2`]);
      const first = accounts.transfer(1, 2);
      await vi.waitFor(async () => expect(await transfer.isLocked(2, 1)).toBe(true));
      expect(await accounts.transfer(2, 1)).toBeUndefined();

      const running = [accounts.export('t'), accounts.export('t')];
      await vi.waitFor(() => expect(exporting).toBe(2));
      expect(await accounts.export('t')).toBeUndefined();

      transferGate.open();
      exportGate.open();
      expect(await first).toBe('1->2');
      expect(await Promise.all(running)).toEqual(['t', 't']);
      expect(await Lock.inspect(`${p}-acct-1`)).toBeNull();
    } finally {
      await app.close();
    }
  });
});
