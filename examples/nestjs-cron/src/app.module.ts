import KeyvRedis from '@keyv/redis';
import { CacheModule } from '@nestjs/cache-manager';
import { Module } from '@nestjs/common';
import { ScheduleModule } from '@nestjs/schedule';
import { CachelockModule } from 'cachelock/nestjs';
import { TickJob } from './tick.job.js';

const redisUrl = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';

@Module({
  imports: [
    // The app's cache. CachelockModule finds CACHE_MANAGER and locks through the Redis client
    // behind it, atomically, with the cache's namespace in front of every lock key.
    CacheModule.register({
      isGlobal: true,
      stores: [new KeyvRedis(redisUrl)],
      namespace: process.env.CACHE_NAMESPACE ?? 'nestjs-cron-example',
    }),
    ScheduleModule.forRoot(),
    CachelockModule.forRoot(),
  ],
  providers: [TickJob],
})
export class AppModule {}
