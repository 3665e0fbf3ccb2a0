import 'reflect-metadata';
import { setTimeout as sleep } from 'node:timers/promises';
import { Controller, Get, Injectable, Module, Param } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { Cron, Interval, ScheduleModule, SchedulerRegistry, Timeout } from '@nestjs/schedule';
import { configure } from 'cachelock';
import { CachelockModule, CachelockService, Once } from 'cachelock/nestjs';
import { afterEach, describe, expect, it } from 'vitest';

afterEach(() => {
  configure(null);
});

describe('@Once with NestJS decorators (memory store, one process)', () => {
  it('keeps @Cron, @Interval and @Timeout firing, in either order, one run at a time', async () => {
    const runs = { cronBelow: 0, cronAbove: 0, interval: 0, timeout: 0 };
    let running = 0;
    let overlapped = false;

    @Injectable()
    class Jobs {
      constructor(readonly locks: CachelockService) {}

      @Cron('* * * * * *', { name: 'below' })
      @Once({ key: 'cron-below' })
      async cronBelow() {
        runs.cronBelow++;
      }

      @Once({ key: 'cron-above' })
      @Cron('* * * * * *', { name: 'above' })
      async cronAbove() {
        runs.cronAbove++;
      }

      // Every 40 ms, for 150 ms: most ticks find the key held and are skipped.
      @Interval('interval', 40)
      @Once({ key: 'interval' })
      async interval() {
        if (running++ > 0) overlapped = true;
        runs.interval++;
        await sleep(150);
        running--;
      }

      @Timeout(10)
      @Once({ key: 'timeout' })
      async timeout() {
        runs.timeout++;
      }
    }
    @Module({ imports: [ScheduleModule.forRoot(), CachelockModule.forRoot()], providers: [Jobs] })
    class AppModule {}

    const app = await NestFactory.createApplicationContext(AppModule, {
      logger: false,
      abortOnError: false,
    });
    const registry = app.get(SchedulerRegistry);
    expect([...registry.getCronJobs().keys()].sort()).toEqual(['above', 'below']);
    await sleep(2_300);
    await app.close();
    expect(runs.cronBelow).toBeGreaterThanOrEqual(2);
    expect(runs.cronAbove).toBeGreaterThanOrEqual(2);
    expect(runs.timeout).toBe(1);
    expect(runs.interval).toBeGreaterThanOrEqual(3);
    expect(overlapped).toBe(false);
  });

  it('keeps a @Get route routing, with its @Param, and refuses a concurrent duplicate', async () => {
    @Controller('reports')
    class ReportsController {
      @Get(':id')
      @Once({ key: 'report-{id}', onLocked: (id: string) => ({ id, status: 'busy' }) })
      async build(@Param('id') id: string) {
        await sleep(300);
        return { id, status: 'built' };
      }
    }
    @Module({ imports: [CachelockModule.forRoot()], controllers: [ReportsController] })
    class AppModule {}

    const app = await NestFactory.create(AppModule, { logger: false, abortOnError: false });
    await app.listen(0, '127.0.0.1');
    const base = await app.getUrl();
    try {
      const [first, second, other] = await Promise.all([
        fetch(`${base}/reports/7`).then((r) => r.json()),
        sleep(50).then(() => fetch(`${base}/reports/7`).then((r) => r.json())),
        sleep(50).then(() => fetch(`${base}/reports/8`).then((r) => r.json())),
      ]);
      expect(first).toEqual({ id: '7', status: 'built' });
      expect(second).toEqual({ id: '7', status: 'busy' });
      expect(other).toEqual({ id: '8', status: 'built' });
      expect((await fetch(`${base}/nowhere`)).status).toBe(404);
    } finally {
      await app.close();
    }
  });
});
