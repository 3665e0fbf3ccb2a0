import 'reflect-metadata';
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  Controller,
  Get,
  type INestApplication,
  type LoggerService,
  Module,
  Param,
  UseFilters,
} from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { configure } from 'cachelock';
import { CachelockModule, LockedExceptionFilter, Once } from 'cachelock/nestjs';
import { afterEach, describe, expect, it } from 'vitest';

const run = randomBytes(4).toString('hex');

/** Collects what Nest logs, by level. */
class Captured implements LoggerService {
  readonly lines: Array<[string, string]> = [];
  log(message: unknown) {
    this.lines.push(['log', String(message)]);
  }
  error(message: unknown, ...rest: unknown[]) {
    this.lines.push(['error', [message, ...rest].map(String).join(' ')]);
  }
  warn(message: unknown) {
    this.lines.push(['warn', String(message)]);
  }
  errors() {
    return this.lines.filter(([level]) => level === 'error').map(([, line]) => line);
  }
}

@Controller('report')
class ReportController {
  @Get(':id')
  @Once({ key: `${run}-report-{id}`, throwIfLocked: true, ttl: '20s' })
  async report(@Param('id') id: string) {
    await sleep(400);
    return { id };
  }
}

@Controller('scoped')
@UseFilters(LockedExceptionFilter)
class ScopedController {
  @Get(':id')
  @Once({ key: `${run}-scoped-{id}`, throwIfLocked: true, ttl: '5s' })
  async report(@Param('id') id: string) {
    await sleep(400);
    return { id };
  }
}

@Module({ imports: [CachelockModule.forRoot()], controllers: [ReportController, ScopedController] })
class AppModule {}

const apps: INestApplication[] = [];
afterEach(async () => {
  for (const app of apps.splice(0)) await app.close();
  configure(null);
});

async function serve(globalFilter: boolean) {
  const logger = new Captured();
  const app = await NestFactory.create(AppModule, { logger });
  apps.push(app);
  if (globalFilter) app.useGlobalFilters(new LockedExceptionFilter());
  await app.listen(0, '127.0.0.1');
  const url = (await app.getUrl()).replace('[::1]', '127.0.0.1');
  return { logger, url };
}

/** Two requests at once; the responses in order of status. */
async function twice(url: string) {
  const responses = await Promise.all([fetch(url), fetch(url)]);
  const bodies = await Promise.all(responses.map((response) => response.json()));
  return responses
    .map((response, i) => ({ response, body: bodies[i] }))
    .sort((a, b) => a.response.status - b.response.status);
}

describe('LockedExceptionFilter over HTTP (Express)', () => {
  it('answers a concurrent duplicate with 409 and Retry-After, and logs no error', async () => {
    const { logger, url } = await serve(true);
    const [ok, conflict] = await twice(`${url}/report/7`);
    expect(ok!.response.status).toBe(200);
    expect(ok!.body).toEqual({ id: '7' });
    expect(conflict!.response.status).toBe(409);
    const retryAfter = Number(conflict!.response.headers.get('retry-after'));
    expect(retryAfter).toBeGreaterThanOrEqual(19);
    expect(retryAfter).toBeLessThanOrEqual(20);
    expect(conflict!.body).toEqual({
      statusCode: 409,
      error: 'Conflict',
      message: 'The same operation is already in progress; try again later',
    });
    // The holder's host and pid stay on the server.
    expect(JSON.stringify(conflict!.body)).not.toContain(String(process.pid));
    expect(logger.errors()).toEqual([]);
  });

  it('works as @UseFilters on a controller', async () => {
    const { logger, url } = await serve(false);
    const [ok, conflict] = await twice(`${url}/scoped/1`);
    expect(ok!.response.status).toBe(200);
    expect(conflict!.response.status).toBe(409);
    expect(Number(conflict!.response.headers.get('retry-after'))).toBeGreaterThanOrEqual(4);
    expect(logger.errors()).toEqual([]);
  });

  it('without it, a duplicate is a 500 with its stack logged (what the filter is for)', async () => {
    const { logger, url } = await serve(false);
    const [, failed] = await twice(`${url}/report/8`);
    expect(failed!.response.status).toBe(500);
    expect(logger.errors().join('\n')).toContain('LockedError');
  });
});
