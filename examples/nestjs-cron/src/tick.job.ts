import { appendFileSync } from 'node:fs';
import { Injectable } from '@nestjs/common';
import { Cron } from '@nestjs/schedule';
import { Once } from 'cachelock/nestjs';

const instance = process.env.INSTANCE ?? `pid-${process.pid}`;

@Injectable()
export class TickJob {
  // Every instance's scheduler fires every second; the lock lets one of them run each tick.
  // holdAtLeast keeps the key past the end of a fast run, so that an instance whose timer fires
  // a few milliseconds later does not run the same tick again. Half the period: a tick that
  // fires up to that late still finds the previous tick's key gone.
  @Cron('* * * * * *')
  @Once({ key: 'tick', holdAtLeast: '500ms' })
  async tick(): Promise<void> {
    const second = Math.floor(Date.now() / 1000);
    console.log(`${instance} ran the tick of ${new Date(second * 1000).toISOString()}`);
    if (process.env.RUN_LOG) {
      appendFileSync(process.env.RUN_LOG, `${JSON.stringify({ instance, second })}\n`);
    }
  }
}
