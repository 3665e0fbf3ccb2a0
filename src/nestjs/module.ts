import type { DynamicModule, Provider } from '@nestjs/common';
import { DiscoveryModule, DiscoveryService, ModuleRef } from '@nestjs/core';
import { CachelockBinding } from './binding.js';
import {
  CACHELOCK_OPTIONS,
  type CachelockModuleAsyncOptions,
  type CachelockModuleOptions,
} from './options.js';
import { CachelockService } from './service.js';

// Providers are factories with explicit `inject` lists, so that this module needs neither
// decorators nor emitted type metadata: it builds with esbuild and works whatever the app's
// TypeScript settings.
const shared: Provider[] = [
  {
    provide: CachelockBinding,
    useFactory: (
      options: CachelockModuleOptions | undefined,
      moduleRef: ModuleRef,
      discovery: DiscoveryService,
    ) => new CachelockBinding(options, moduleRef, discovery),
    inject: [CACHELOCK_OPTIONS, ModuleRef, DiscoveryService],
  },
  {
    provide: CachelockService,
    useFactory: (binding: CachelockBinding) => new CachelockService(binding),
    inject: [CachelockBinding],
  },
];

/**
 * Makes the app's cache (see `CachelockModuleOptions` for which cache) and these options the
 * defaults of the `@Once` methods of the app's providers and controllers, and of
 * `CachelockService`; another app in the same process keeps its own. On shutdown it closes the
 * stores it opened.
 *
 * ```ts
 * @Module({ imports: [CacheModule.register({ isGlobal: true }), CachelockModule.forRoot()] })
 * export class AppModule {}
 * ```
 */
// biome-ignore lint/complexity/noStaticOnlyClass: NestJS modules are classes
export class CachelockModule {
  static forRoot(options: CachelockModuleOptions & { isGlobal?: boolean } = {}): DynamicModule {
    const { isGlobal, ...moduleOptions } = options;
    return {
      module: CachelockModule,
      global: isGlobal ?? false,
      imports: [DiscoveryModule],
      providers: [{ provide: CACHELOCK_OPTIONS, useValue: moduleOptions }, ...shared],
      exports: [CachelockService],
    };
  }

  static forRootAsync(options: CachelockModuleAsyncOptions): DynamicModule {
    if (typeof options?.useFactory !== 'function') {
      throw new TypeError('CachelockModule.forRootAsync: useFactory must be a function');
    }
    return {
      module: CachelockModule,
      global: options.isGlobal ?? false,
      imports: [DiscoveryModule, ...(options.imports ?? [])],
      providers: [
        {
          provide: CACHELOCK_OPTIONS,
          useFactory: options.useFactory,
          inject: options.inject ?? [],
        },
        ...shared,
      ],
      exports: [CachelockService],
    };
  }
}
