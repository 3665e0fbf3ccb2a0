import { randomBytes } from 'node:crypto';
import mysql from 'mysql2/promise';
import { afterAll, describe, expect, it } from 'vitest';
import { assertExclusive, runExclusion } from '../harness/exclusion.js';
import { builtOrSkip, serverOrSkip } from '../support/reachable.js';

const reachable = await serverOrSkip('MariaDB', 3306);

describe.runIf(reachable && builtOrSkip('mysql multi-process', ['index.js', 'mysql/index.js']))(
  'mysql store across processes (built package)',
  () => {
    // A table of this run's own, which the processes race to create.
    const table = `cachelock_exclusion_${randomBytes(4).toString('hex')}`;

    afterAll(async () => {
      const connection = await mysql.createConnection({
        host: '127.0.0.1',
        user: 'root',
        database: 'test',
      });
      await connection.query(`DROP TABLE IF EXISTS \`${table}\``);
      await connection.end();
    });

    for (const scheme of ['mysql', 'mariadb']) {
      it(`keeps 8 processes exclusive on 2 keys, fences rising (${scheme}://)`, async () => {
        const result = await runExclusion({
          cache: `${scheme}://root@127.0.0.1:3306/test?table=${table}`,
          processes: 8,
          sectionsPerProcess: 10,
          keys: 2,
        });
        assertExclusive(result);
        expect(result.sections).toBe(80);
        expect(result.perKey.reduce((sum, k) => sum + k.counter, 0)).toBe(80);
      }, 180_000);
    }
  },
);
