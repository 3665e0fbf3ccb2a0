import { type ArgumentsHost, Catch, type ExceptionFilter } from '@nestjs/common';
import { LockedError, LockTimeoutError } from 'cachelock';

/** What a 409 says: nothing about the holder (its host and pid are not the client's business). */
export interface LockedResponseBody {
  statusCode: 409;
  error: 'Conflict';
  message: string;
}

/** The minimum of Express' and Fastify's replies that answering needs. */
interface Reply {
  status?(code: number): unknown;
  code?(code: number): unknown;
  header?(name: string, value: string): unknown;
  setHeader?(name: string, value: string): unknown;
  json?(body: unknown): unknown;
  send?(body: unknown): unknown;
}

/**
 * Answers an HTTP request that found its `@Once({ throwIfLocked: true })` key held (a
 * `LockedError`, or a `LockTimeoutError` after `wait`) with `409 Conflict` and, where the
 * holder's remaining lease is known, `Retry-After` in seconds. Nothing is logged: a duplicate
 * request is the lock working, not a server error.
 *
 * ```ts
 * app.useGlobalFilters(new LockedExceptionFilter());   // or @UseFilters(LockedExceptionFilter)
 * ```
 *
 * Express and Fastify both work. Outside HTTP (microservices, WebSockets) it rethrows.
 */
export class LockedExceptionFilter implements ExceptionFilter<LockedError | LockTimeoutError> {
  catch(error: LockedError | LockTimeoutError, host: ArgumentsHost): void {
    if (host.getType() !== 'http') throw error;
    const reply = host.switchToHttp().getResponse<Reply>();
    const retryAfter = retryAfterSeconds(error);
    if (retryAfter !== undefined) {
      const setHeader = reply.header ?? reply.setHeader;
      setHeader?.call(reply, 'Retry-After', String(retryAfter));
    }
    (reply.status ?? reply.code)?.call(reply, 409);
    const body: LockedResponseBody = {
      statusCode: 409,
      error: 'Conflict',
      message: 'The same operation is already in progress; try again later',
    };
    (reply.json ?? reply.send)?.call(reply, body);
  }
}
Catch(LockedError, LockTimeoutError)(LockedExceptionFilter);

/** Whole seconds until the holder's lease ends (at least 1), or undefined when not known. */
export function retryAfterSeconds(error: LockedError | LockTimeoutError): number | undefined {
  const ttlMs = error.holder?.ttlMs;
  if (ttlMs === undefined || !Number.isFinite(ttlMs)) return undefined;
  return Math.max(1, Math.ceil(ttlMs / 1000));
}
