import type { LedgerConfig } from './config.js';

/**
 * Aggregation periods (an hour or a day, in the configured fixed offset) and
 * the two bucket levels nested inside them. Pure arithmetic on milliseconds.
 */
export class Periods {
  readonly periodMs: number;
  readonly offsetMs: number;

  constructor(aggregation: LedgerConfig['aggregation']) {
    this.periodMs = aggregation.period === 'day' ? 86_400_000 : 3_600_000;
    const tz = aggregation.timezone;
    this.offsetMs =
      tz === 'UTC' ? 0 : (tz[0] === '-' ? -1 : 1) * (Number(tz.slice(1, 3)) * 60 + Number(tz.slice(4, 6))) * 60_000;
  }

  /** Start of the aggregation period holding `ms`. */
  periodStart(ms: number): number {
    return Math.floor((ms + this.offsetMs) / this.periodMs) * this.periodMs - this.offsetMs;
  }

  periodEnd(ms: number): number {
    return this.periodStart(ms) + this.periodMs;
  }

  /** Bucket sizes inside a period: level 1 = period / 24 (an hour for days), level 2 = level 1 / 60 (a minute). */
  bucketMs(level: number): number {
    return level === 1 ? this.periodMs / 24 : this.periodMs / 24 / 60;
  }

  /** Start of the level-`level` bucket holding `ms` (buckets nest inside periods and inside each other). */
  bucketStart(ms: number, level: number): number {
    const size = this.bucketMs(level);
    return Math.floor((ms + this.offsetMs) / size) * size - this.offsetMs;
  }
}
