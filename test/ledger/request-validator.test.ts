import { describe, expect, it } from 'vitest';
import { buildConfig } from '../../src/core/config.js';
import { ManualClock } from '../../src/core/clock.js';
import { type MillraceError, isMillraceError } from '../../src/core/errors.js';
import { RequestValidator } from '../../src/ledger/request-validator.js';
import { Runtime } from '../../src/runtime.js';
import { createTestEnv } from '../support/env.js';
import { LEDGER_CONFIG } from './support.js';

function refusal(fn: () => unknown): MillraceError {
  try {
    fn();
  } catch (err) {
    if (isMillraceError(err)) return err;
    throw err;
  }
  throw new Error('accepted');
}

// The validator only reads the config and routes by shard key: one SQLite runtime is enough.
describe('request validator', () => {
  it('checks account, lock and state attributes with one rule set, and accepts valid ones', async () => {
    const env = await createTestEnv('sqlite', { shards: 1, extra: { ledger: LEDGER_CONFIG as never } });
    const rt = await Runtime.open(env.config, { clock: new ManualClock(Date.parse('2026-01-15T00:00:00Z')) });
    try {
      const v = new RequestValidator(rt, buildConfig({ ledger: LEDGER_CONFIG }).ledger);
      const commission = v.accountType('commission');
      expect(v.accountAttrs(commission, { client_id: 'c1', currency: 'RUB', product: 'taxi' }, 'w', true)).toEqual({
        keyVals: ['c1', 'RUB'],
        aux: { product: 'taxi' },
      });
      expect(v.keyedType('locks', 'client', { client_id: 'c1' }, 'w').keyText).toBe('["c1"]');
      const cases: Array<[() => unknown, string, string | undefined]> = [
        [
          () => v.accountAttrs(commission, { client_id: 'c1', currency: 'RUB', product: 'taxi' }, 'w', false),
          'w: account type "commission" has no key attribute "product"',
          'product',
        ],
        [
          () => v.accountAttrs(commission, { client_id: 'c1' }, 'w', true),
          'w: key attribute "currency" of account type "commission" is missing',
          'currency',
        ],
        [
          () => v.keyedType('locks', 'client', { client_id: 'c1', other: 'x' }, 'w'),
          'w: lock type "client" has no attribute "other"',
          'other',
        ],
        [
          () => v.keyedType('states', 'contract', {}, 'w'),
          'w: key attribute "contract_id" of state type "contract" is missing',
          'contract_id',
        ],
        [
          () => v.keyedType('states', 'contract', { contract_id: 7 }, 'w'),
          'w: attribute "contract_id" must be a string of at most 256 characters',
          undefined,
        ],
        [() => v.keyedType('locks', 'client', ['c1'], 'w'), 'w: attributes must be an object', undefined],
        [
          () => v.accountAttrs(commission, { client_id: 'x'.repeat(257), currency: 'RUB' }, 'w', true),
          'w: attribute "client_id" must be a string of at most 256 characters',
          undefined,
        ],
      ];
      for (const [fn, message, attribute] of cases) {
        const err = refusal(fn);
        expect(err.code).toBe('invalid_attributes');
        expect(err.message).toBe(message);
        expect(err.details?.attribute).toBe(attribute);
      }
      expect(refusal(() => v.keyedType('locks', 'nope', {}, 'w')).code).toBe('lock_type_not_found');
      expect(refusal(() => v.keyedType('states', 'nope', {}, 'w')).code).toBe('state_type_not_found');
    } finally {
      await rt.close();
      await env.cleanup();
    }
  });
});
