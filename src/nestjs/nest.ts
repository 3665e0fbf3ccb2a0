import { createRequire } from 'node:module';
import type * as NestCommon from '@nestjs/common';
import type * as NestCore from '@nestjs/core';

/**
 * `@nestjs/core`, loaded here rather than by a static import, so that an app without NestJS
 * gets a message that says what to install instead of a bare "Cannot find module".
 */
function loadNest(): { core: typeof NestCore; common: typeof NestCommon } {
  try {
    const require = createRequire(import.meta.url);
    return {
      common: require('@nestjs/common') as typeof NestCommon,
      core: require('@nestjs/core') as typeof NestCore,
    };
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'MODULE_NOT_FOUND') throw error;
    throw new Error(
      'cachelock/nestjs needs NestJS: npm install @nestjs/core @nestjs/common (cachelock/nestjs is only for NestJS apps; use cachelock itself elsewhere)',
      { cause: error },
    );
  }
}

const { core, common } = loadNest();

/** Nest's `ModuleRef`, the token the module injects to find the app's cache. */
export const ModuleRef: typeof NestCore.ModuleRef = core.ModuleRef;
export type ModuleRef = NestCore.ModuleRef;
/** Nest's `DiscoveryModule` and `DiscoveryService`, to find the app's `@Once` methods. */
export const DiscoveryModule: typeof NestCore.DiscoveryModule = core.DiscoveryModule;
export const DiscoveryService: typeof NestCore.DiscoveryService = core.DiscoveryService;
export type DiscoveryService = NestCore.DiscoveryService;
/** Nest's `@Catch` decorator, for the exception filter. */
export const Catch: typeof NestCommon.Catch = common.Catch;
