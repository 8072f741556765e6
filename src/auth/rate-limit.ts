import { MillraceError } from '../core/errors.js';

export interface RateLimitSettings {
  /** Sustained requests per second per principal. */
  requestsPerS: number;
  /** Requests a principal may send at once after being idle. */
  burst: number;
}

interface Bucket {
  tokens: number;
  at: number;
}

/**
 * A token bucket per principal: `burst` requests at once, refilled at
 * `requestsPerS`. A request over the limit is refused with `rate_limited`
 * and the seconds until one more is allowed (Retry-After). Kept per node:
 * with N nodes a principal may send up to N times the rate in all.
 */
export class RateLimiter {
  private readonly buckets = new Map<string, Bucket>();

  constructor(
    readonly settings: RateLimitSettings,
    private readonly now: () => number = () => Date.now(),
  ) {}

  /** Takes one request from the principal's bucket, or throws `rate_limited`. */
  take(principalId: string): void {
    const t = this.now();
    const { requestsPerS: rate, burst } = this.settings;
    let b = this.buckets.get(principalId);
    if (b === undefined) {
      if (this.buckets.size >= 100_000) this.sweep(t);
      b = { tokens: burst, at: t };
      this.buckets.set(principalId, b);
    } else {
      b.tokens = Math.min(burst, b.tokens + ((t - b.at) / 1000) * rate);
      b.at = t;
    }
    if (b.tokens >= 1) {
      b.tokens -= 1;
      return;
    }
    const waitS = (1 - b.tokens) / rate;
    throw new MillraceError(
      'rate_limited',
      `${principalId} is over its rate limit of ${rate} requests per second (burst ${burst})`,
      {
        details: { principal: principalId, requests_per_s: rate, burst },
        retryAfterS: Math.max(1, Math.ceil(waitS)),
      },
    );
  }

  /** Forgets full buckets (a principal idle long enough to refill is the same as a new one). */
  private sweep(t: number): void {
    const { requestsPerS: rate, burst } = this.settings;
    for (const [id, b] of this.buckets) if (b.tokens + ((t - b.at) / 1000) * rate >= burst) this.buckets.delete(id);
  }
}
