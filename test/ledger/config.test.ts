import { describe, expect, it } from 'vitest';
import { buildConfig } from '../../src/core/config.js';
import { isMillraceError } from '../../src/core/errors.js';

const build = (ledger: unknown) => () => buildConfig({ ledger });

function refused(ledger: unknown): string {
  try {
    build(ledger)();
  } catch (err) {
    expect(isMillraceError(err, 'config_invalid')).toBe(true);
    return (err as Error).message;
  }
  throw new Error('config was accepted');
}

describe('ledger config', () => {
  it('accepts the issue example and fills defaults', () => {
    const c = buildConfig({
      ledger: {
        accounts: {
          taxi_commission: {
            key: ['client_id', 'currency'],
            aux: ['product', 'region'],
            groupings: [['product'], ['region'], ['product', 'region']],
            shard_key: ['client_id'],
            scale: 2,
          },
        },
        locks: { client: { key: ['client_id'] } },
        states: { contract: { key: ['contract_id'] } },
        aggregation: { period: 'day', timezone: 'UTC' },
      },
    });
    expect(c.ledger.accounts.taxi_commission!.scale).toBe(2);
    expect(buildConfig({}).ledger.accounts).toEqual({});
  });

  it('refuses an unknown attribute in a grouping, naming it', () => {
    const m = refused({ accounts: { a: { key: ['k'], aux: ['x'], groupings: [['x', 'y']] } } });
    expect(m).toContain('"y"');
    expect(m).toContain('ledger.accounts.a.groupings.0');
  });

  it('refuses a repeated attribute (key/aux, in a grouping, in a lock key)', () => {
    expect(refused({ accounts: { a: { key: ['k', 'x'], aux: ['x'] } } })).toContain('attribute "x" is repeated');
    expect(refused({ accounts: { a: { key: ['k'], aux: ['x'], groupings: [['x', 'x']] } } })).toContain(
      '"x" is repeated in grouping',
    );
    expect(refused({ locks: { l: { key: ['a', 'a'] } } })).toContain('"a" is repeated');
  });

  it('refuses a shard key outside the key, naming the key', () => {
    const m = refused({ accounts: { a: { key: ['client_id'], aux: ['region'], shard_key: ['region'] } } });
    expect(m).toContain('shard key attribute "region" is not in the key [client_id]');
    expect(refused({ states: { s: { key: ['a'], shard_key: ['b'] } } })).toContain('"b" is not in the key');
  });

  it('refuses unknown fields, bad scale, bad timezone, empty key', () => {
    expect(refused({ accounts: { a: { key: ['k'], colour: 1 } } })).toContain('colour');
    expect(refused({ accounts: { a: { key: ['k'], scale: 19 } } })).toContain('scale');
    expect(refused({ aggregation: { timezone: 'Mars/Base' } })).toContain('timezone');
    expect(refused({ accounts: { a: { key: [] } } })).toContain('key');
    expect(refused({ accounts: { a: { key: ['k'], groupings: [['k']] } } })).toContain('not an aux attribute');
  });
});
