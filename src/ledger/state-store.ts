import { MillraceError } from '../core/errors.js';
import type { Tx } from '../storage/port.js';
import { ledgerSql as sql } from './ledger-sql.js';
import type { Attrs } from './ledger-types.js';
import type { RequestValidator } from './request-validator.js';

/** Name under which writers of a state take it in the committer's global lock order. */
export const stateKey = (type: string, keyText: string): string => `ledger.state/${type}/${keyText}`;

/** Versioned JSON states on configured state keys, written by batches under optimistic versions. */
export class StateStore {
  constructor(private readonly validate: RequestValidator) {}

  async checkStateVersion(
    q: { all: Tx['all'] },
    type: string,
    keyText: string,
    expected: number | undefined,
  ): Promise<number> {
    const rows = await q.all<{ version: number }>(sql.stateVersion, [type, keyText]);
    const current = rows[0] ? Number(rows[0].version) : 0;
    if (expected !== undefined && expected !== current) {
      throw new MillraceError(
        'state_version_conflict',
        `state ${type} ${keyText} is at version ${current}, expected ${expected}`,
        {
          details: { type, key: keyText, expected_version: expected, actual_version: current },
        },
      );
    }
    return current;
  }

  async writeState(
    tx: Tx,
    type: string,
    keyText: string,
    state: string,
    expected: number | undefined,
    now: number,
  ): Promise<number> {
    const current = await this.checkStateVersion(tx, type, keyText, expected);
    if (current === 0) {
      const n = await tx.run(sql.stateInsert, [type, keyText, state, now]);
      if (n === 0)
        throw new MillraceError('state_version_conflict', `state ${type} ${keyText} was created concurrently`, {
          details: { type, key: keyText },
        });
      return 1;
    }
    const n = await tx.run(sql.stateUpdate, [state, now, type, keyText, current]);
    if (n === 0)
      throw new MillraceError('state_version_conflict', `state ${type} ${keyText} changed concurrently`, {
        details: { type, key: keyText },
      });
    return current + 1;
  }

  async getState(req: {
    type: string;
    attrs: Attrs;
  }): Promise<{ type: string; attrs: Attrs; state: unknown; version: number }> {
    const { keyText, shard } = this.validate.keyedType('states', req.type, req.attrs, 'attrs');
    const rows = await shard.reader.all<{ state: string; version: number }>(sql.stateGet, [req.type, keyText]);
    const r = rows[0];
    return {
      type: req.type,
      attrs: req.attrs,
      state: r ? (JSON.parse(r.state) as unknown) : null,
      version: r ? Number(r.version) : 0,
    };
  }
}
