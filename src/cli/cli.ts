import { closeAll, StoreError } from 'cachelock';
import { parseCommandLine, type Request } from './args.js';
import { showCache } from './cache.js';
import { Exit, UsageError } from './exit.js';
import { forceRelease } from './release.js';
import { run } from './run.js';
import { status } from './status.js';
import { HELP, SYNOPSIS, version } from './usage.js';

/** How long to let stores close their connections before exiting anyway. */
const CLOSE_TIMEOUT_MS = 2_000;

/** Run the command line and exit the process with its status. */
export async function main(argv: string[]): Promise<never> {
  hideSqliteExperimentalWarning();
  const code = await cli(argv);
  await Promise.race([
    closeAll().catch(() => undefined),
    new Promise((resolve) => setTimeout(resolve, CLOSE_TIMEOUT_MS).unref()),
  ]);
  process.exit(code);
}

/** The exit status for a command line; reports problems on stderr. */
export async function cli(argv: string[]): Promise<number> {
  let request: Request;
  try {
    request = parseCommandLine(argv);
  } catch (error) {
    return failure(error, undefined);
  }
  try {
    switch (request.command) {
      case 'help':
        process.stdout.write(`${HELP}\n`);
        return Exit.ok;
      case 'version':
        process.stdout.write(`${version()}\n`);
        return Exit.ok;
      case 'status':
        return await status(request);
      case 'release':
        return await forceRelease(request);
      case 'run':
        return await run(request);
    }
  } catch (error) {
    return failure(error, request);
  }
}

function failure(error: unknown, request: Request | undefined): number {
  // The core rejects a bad option or cache URL with a TypeError/RangeError that names it.
  if (error instanceof UsageError || error instanceof TypeError || error instanceof RangeError) {
    process.stderr.write(`cachelock: ${error.message}\n${SYNOPSIS}\n`);
    return Exit.usage;
  }
  if (error instanceof StoreError) {
    const where = request !== undefined && 'cache' in request ? ` ${showCache(request.cache)}` : '';
    process.stderr.write(`cachelock: the cache${where} is unavailable: ${error.message}\n`);
    return Exit.unavailable;
  }
  process.stderr.write(
    `cachelock: unexpected error: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`,
  );
  return Exit.internal;
}

/**
 * node:sqlite (the default cache's driver on newer Node.js) warns that it is experimental on
 * first use. The command owns its process, and that line would land in every cron mail.
 */
function hideSqliteExperimentalWarning(): void {
  const emitWarning = process.emitWarning;
  process.emitWarning = function (this: unknown, warning: string | Error, ...rest: unknown[]) {
    const message = typeof warning === 'string' ? warning : warning.message;
    const first = rest[0] as string | { type?: string } | undefined;
    const type =
      typeof first === 'string' ? first : (first?.type ?? (warning as Error).name ?? 'Warning');
    if (type === 'ExperimentalWarning' && /\bSQLite\b/i.test(message)) return;
    return (emitWarning as (...args: unknown[]) => void).call(process, warning, ...rest);
  } as typeof process.emitWarning;
}
