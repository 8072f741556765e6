import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { grants, holds, holdsSome, permissionProblem, type Principal } from '../../src/core/principal.js';

const who = (...permissions: string[]): Principal => ({ id: 't', source: 'token', name: 't', permissions });

describe('permissions', () => {
  it('matches <face>:<action>:<resource> with * wildcards', () => {
    const cases: Array<[string, string, boolean]> = [
      ['*', 'bus:publish:orders', true],
      ['*', 'log:read', true],
      ['bus:*', 'bus:publish:orders', true],
      ['bus:*', 'bus:admin:x', true],
      ['bus:*', 'busy:publish:orders', false],
      ['bus:*', 'ledger:read:acc', false],
      ['bus:publish:*', 'bus:publish:orders', true],
      ['bus:publish:*', 'bus:subscribe:orders', false],
      ['bus:publish:orders', 'bus:publish:orders', true],
      ['bus:publish:orders', 'bus:publish:orders2', false],
      ['bus:publish:orders', 'bus:publish:*', false],
      ['bus:publish:ord*', 'bus:publish:orders', true],
      ['bus:publish:ord*', 'bus:publish:*', false],
      ['bus:publish', 'bus:publish:orders', false],
      ['*:read:*', 'machines:read:ns', true],
      ['*:read:*', 'machines:write:ns', false],
      ['log:read', 'log:read', true],
      ['log:read:*', 'log:read', true],
      ['log:*', 'log:read', true],
      ['auth:admin', 'log:read', false],
      ['machines:read:a.b', 'machines:read:aXb', false],
    ];
    for (const [pattern, required, expected] of cases)
      expect([pattern, required, grants(pattern, required)]).toEqual([pattern, required, expected]);
  });

  it('a principal holds a permission when any pattern grants it; holdsSome asks for the face and action only', () => {
    const p = who('bus:publish:orders', 'log:read');
    expect(holds(p, 'bus:publish:orders')).toBe(true);
    expect(holds(p, 'bus:publish:other')).toBe(false);
    expect(holdsSome(p, 'bus:publish')).toBe(true);
    expect(holdsSome(p, 'bus:subscribe')).toBe(false);
    expect(holdsSome(who('*'), 'pipe:write')).toBe(true);
    expect(holdsSome(who('pipe:*'), 'pipe:write')).toBe(true);
  });

  it('a concrete resource is granted only by patterns that name it or a wildcard covering it', () => {
    const name = fc.stringMatching(/^[A-Za-z0-9._-]{1,12}$/);
    fc.assert(
      fc.property(name, name, (a, b) => {
        expect(grants(`bus:publish:${a}`, `bus:publish:${b}`)).toBe(a === b);
        expect(grants('bus:publish:*', `bus:publish:${b}`)).toBe(true);
        expect(grants(`bus:publish:${a}`, 'bus:publish:*')).toBe(false);
      }),
    );
  });

  it('checks the grammar of granted permissions', () => {
    for (const ok of ['*', 'bus:*', 'bus:publish:orders', 'log:read', 'pipe:write:k*', 'machines:read:ns:with:colons'])
      expect([ok, permissionProblem(ok)]).toEqual([ok, null]);
    for (const bad of ['', 'bus', 'bus:', ':x', 'bus:publish:', 'bus pub:x', 42, null])
      expect(permissionProblem(bad)).not.toBeNull();
  });
});
