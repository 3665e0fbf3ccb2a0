import { createRequire } from 'node:module';
import type { ModuleRef as ModuleRefClass } from '@nestjs/core';

/**
 * `@nestjs/core`, loaded here rather than by a static import, so that an app without NestJS
 * gets a message that says what to install instead of a bare "Cannot find module".
 */
function loadNestCore(): typeof import('@nestjs/core') {
  try {
    return createRequire(import.meta.url)('@nestjs/core') as typeof import('@nestjs/core');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'MODULE_NOT_FOUND') throw error;
    throw new Error(
      'cachelock/nestjs needs NestJS: npm install @nestjs/core @nestjs/common (cachelock/nestjs is only for NestJS apps; use cachelock itself elsewhere)',
      { cause: error },
    );
  }
}

/** Nest's `ModuleRef`, the token the module injects to find the app's cache. */
export const ModuleRef: typeof ModuleRefClass = loadNestCore().ModuleRef;
export type ModuleRef = ModuleRefClass;
