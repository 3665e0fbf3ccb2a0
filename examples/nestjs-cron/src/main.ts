// Run two or more of these at once: each second's tick runs in exactly one of them.
//   npm run build && npx tsc -p examples/nestjs-cron && node examples/nestjs-cron/dist/main.js
import 'reflect-metadata';
import { NestFactory } from '@nestjs/core';
import { AppModule } from './app.module.js';

const app = await NestFactory.createApplicationContext(AppModule, { logger: ['error', 'warn'] });
app.enableShutdownHooks();
console.log(`${process.env.INSTANCE ?? `pid-${process.pid}`} started`);

// RUN_FOR=10 stops after ten seconds (the example's test uses it).
const runFor = Number(process.env.RUN_FOR ?? 0);
if (runFor > 0) setTimeout(() => void app.close(), runFor * 1000);
