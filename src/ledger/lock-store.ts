import { MillraceError, badRequest } from '../core/errors.js';
import type { Runtime } from '../runtime.js';
import type { Tx } from '../storage/port.js';
import { ledgerSql as sql } from './ledger-sql.js';
import { type Attrs, type LockMode, iso } from './ledger-types.js';
import type { RequestValidator } from './request-validator.js';

/** Name under which writers of a lock key take it in the committer's global lock order. */
export const lockHeadKey = (type: string, keyText: string): string => `ledger.lock/${type}/${keyText}`;

/** Leased locks (exclusive or shared) on configured lock keys, held by a uid until they expire or are released. */
export class LockStore {
  constructor(
    private readonly rt: Runtime,
    private readonly validate: RequestValidator,
  ) {}

  /** Serializes every operation on one lock key (a row lock where several connections write, the one writer otherwise). */
  async lockHead(tx: Tx, type: string, keyText: string): Promise<void> {
    await tx.run(sql.lockHead, [type, keyText]);
  }

  async checkLockHeld(q: { all: Tx['all'] }, type: string, keyText: string, uid: string, now: number): Promise<void> {
    const rows = await q.all<{ mode: string }>(sql.lockHeldMode, [type, keyText, uid, now]);
    if (rows.length === 0) {
      throw new MillraceError('lock_not_held', `lock ${type} ${keyText} is not held by "${uid}"`, {
        details: { type, key: keyText, uid },
      });
    }
  }

  async acquireLock(req: { type: string; attrs: Attrs; uid: string; mode: LockMode; timeout_s: number }) {
    const { keyText, shard } = this.validate.keyedType('locks', req.type, req.attrs, 'attrs');
    const uid = this.validate.lockUid(req.uid);
    if (req.mode !== 'exclusive' && req.mode !== 'shared') throw badRequest('mode must be "exclusive" or "shared"');
    const ttl = this.validate.lockTimeout(req.timeout_s);
    const now = this.rt.clock.now();
    return shard.write(
      async (tx) => {
        await this.lockHead(tx, req.type, keyText);
        await tx.run(sql.lockDeleteExpired, [req.type, keyText, now]);
        const rows = await tx.all<{ uid: string; mode: LockMode }>(sql.lockHolders, [req.type, keyText]);
        const others = rows.filter((r) => r.uid !== uid);
        const conflict = req.mode === 'exclusive' ? others[0] : others.find((r) => r.mode === 'exclusive');
        if (conflict) {
          throw new MillraceError('lock_held', `lock ${req.type} ${keyText} is held ${conflict.mode} by someone else`, {
            details: { type: req.type, key: keyText, held_mode: conflict.mode },
          });
        }
        const expiresAt = now + ttl;
        const n = await tx.run(sql.lockUpdate, [req.mode, expiresAt, req.type, keyText, uid]);
        if (n === 0) await tx.run(sql.lockInsert, [req.type, keyText, uid, req.mode, expiresAt]);
        return { type: req.type, attrs: req.attrs, uid, mode: req.mode, expires_at: iso(expiresAt) };
      },
      { lockKeys: [lockHeadKey(req.type, keyText)] },
    );
  }

  async pingLock(req: { type: string; attrs: Attrs; uid: string; timeout_s: number }) {
    const { keyText, shard } = this.validate.keyedType('locks', req.type, req.attrs, 'attrs');
    const uid = this.validate.lockUid(req.uid);
    const ttl = this.validate.lockTimeout(req.timeout_s);
    const now = this.rt.clock.now();
    return shard.write(
      async (tx) => {
        await this.lockHead(tx, req.type, keyText);
        const rows = await tx.all<{ mode: LockMode }>(sql.lockHeldMode, [req.type, keyText, uid, now]);
        if (rows.length === 0)
          throw new MillraceError('lock_not_held', `lock ${req.type} ${keyText} is not held by "${uid}"`, {
            details: { type: req.type, key: keyText, uid },
          });
        await tx.run(sql.lockExtend, [now + ttl, req.type, keyText, uid]);
        return { type: req.type, attrs: req.attrs, uid, mode: rows[0]!.mode, expires_at: iso(now + ttl) };
      },
      { lockKeys: [lockHeadKey(req.type, keyText)] },
    );
  }

  async releaseLock(req: { type: string; attrs: Attrs; uid: string }) {
    const { keyText, shard } = this.validate.keyedType('locks', req.type, req.attrs, 'attrs');
    const uid = this.validate.lockUid(req.uid);
    const now = this.rt.clock.now();
    const released = await shard.write(
      async (tx) => {
        await this.lockHead(tx, req.type, keyText);
        const live = await tx.all(sql.lockLive, [req.type, keyText, uid, now]);
        await tx.run(sql.lockDelete, [req.type, keyText, uid]);
        return live.length > 0;
      },
      { lockKeys: [lockHeadKey(req.type, keyText)] },
    );
    return { released };
  }

  async getLock(req: { type: string; attrs: Attrs }) {
    const { keyText, shard } = this.validate.keyedType('locks', req.type, req.attrs, 'attrs');
    const rows = await shard.reader.all<{ uid: string; mode: LockMode; expires_at: number }>(sql.lockLiveHolders, [
      req.type,
      keyText,
      this.rt.clock.now(),
    ]);
    return {
      type: req.type,
      attrs: req.attrs,
      holders: rows.map((r) => ({ uid: r.uid, mode: r.mode, expires_at: iso(Number(r.expires_at)) })),
    };
  }
}
