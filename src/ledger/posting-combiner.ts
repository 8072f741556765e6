import { toMillraceError } from '../core/errors.js';
import type { Tx } from '../storage/port.js';
import type { Shard } from '../storage/storage.js';

/** One caller's postings for one shard: what a wave writes for it. */
export interface Posting<P> {
  readonly payload: P;
  /** What the posting writes that other writers contend for (its account streams). */
  readonly keys: readonly string[];
}

interface Waiting<P> extends Posting<P> {
  resolve: () => void;
  reject: (e: unknown) => void;
}

/** Keys of one wave at most (within the committer's per-transaction bound). */
const WAVE_KEYS = 512;
/** Postings of one wave at most. */
const WAVE_POSTINGS = 1000;

/**
 * Folds concurrent postings to one shard into waves: while a wave is being
 * written, new postings wait, and the next wave writes all of them with a few
 * set-based statements in one group-committed function (so a wave of N
 * transfers costs about what one costs). A wave declares the union of its
 * postings' keys, so waves and other writers lock in the committer's order.
 *
 * A wave is all or nothing. If it fails for a reason other than the storage
 * being unavailable, its postings are written one by one, so that only a
 * posting that fails alone gets an error.
 */
export class PostingCombiner<P> {
  private waiting: Array<Waiting<P>> = [];
  private inFlight = 0;
  private scheduled = false;
  /** Waves written, and postings in them (for metrics and the benchmark). */
  readonly stats = { waves: 0, postings: 0, fallbacks: 0 };

  private readonly maxInFlight: number;

  /**
   * `write` writes postings inside a transaction (a wave, or one posting
   * alone after a failed wave); `opts.wave`, if given, writes a whole wave
   * in a transaction of its own that takes `keys` (one round trip where the
   * storage allows), instead of `write` in a group-committed transaction.
   */
  constructor(
    private readonly shard: Shard,
    private readonly write: (tx: Tx, postings: readonly P[]) => Promise<void>,
    private readonly opts: {
      maxInFlight?: number;
      /** The view of the shard that postings are written through (it checks their keys' routes); default the shard. */
      route?: (postings: readonly P[]) => Shard;
      wave?: (postings: readonly P[], keys: readonly string[]) => Promise<void>;
    } = {},
  ) {
    this.maxInFlight = opts.maxInFlight ?? 1;
  }

  post(payload: P, keys: readonly string[]): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.waiting.push({ payload, keys, resolve, reject });
      this.schedule();
    });
  }

  /** Forms waves once the callers woken in this turn of the event loop have posted. */
  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      this.pump();
    });
  }

  private pump(): void {
    while (this.inFlight < this.maxInFlight && this.waiting.length > 0) {
      const keys = new Set<string>();
      let n = 0;
      while (n < this.waiting.length && n < WAVE_POSTINGS) {
        const k = this.waiting[n]!.keys;
        if (n > 0 && keys.size + k.length > WAVE_KEYS) break;
        for (const x of k) keys.add(x);
        n++;
      }
      const wave = this.waiting.splice(0, n);
      this.inFlight++;
      this.stats.waves++;
      this.stats.postings += wave.length;
      void this.run(wave, [...keys]).finally(() => {
        this.inFlight--;
        // Callers answered by this wave often post again at once: let them
        // (their promise chains) reach the queue before the next wave forms.
        this.schedule();
      });
    }
  }

  private via(payloads: readonly P[]): Shard {
    return this.opts.route?.(payloads) ?? this.shard;
  }

  private async run(wave: Array<Waiting<P>>, keys: string[]): Promise<void> {
    try {
      const payloads = wave.map((w) => w.payload);
      if (this.opts.wave !== undefined) await this.opts.wave(payloads, keys);
      else await this.via(payloads).write((tx) => this.write(tx, payloads), { lockKeys: keys });
      for (const w of wave) w.resolve();
      return;
    } catch (err) {
      // A posting alone, or a node going down: the error is the answer. Otherwise
      // (even a wave that kept losing races) each posting gets a transaction of its own.
      if (wave.length === 1 || toMillraceError(err).code === 'shutting_down') {
        for (const w of wave) w.reject(err);
        return;
      }
    }
    // Find the posting at fault: each alone.
    this.stats.fallbacks++;
    await Promise.all(
      wave.map((w) =>
        this.via([w.payload])
          .write((tx) => this.write(tx, [w.payload]), { lockKeys: w.keys })
          .then(
            () => w.resolve(),
            (e: unknown) => w.reject(e),
          ),
      ),
    );
  }
}
