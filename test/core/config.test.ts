import { describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import { resolve } from 'node:path';
import { hostname } from 'node:os';
import { buildConfig, checkCoverage, type ShardConfig } from '../../src/core/config.js';
import { isMillraceError } from '../../src/core/errors.js';
import { HASH_SPACE_END, parseHashBound, sha1, shardKeyText, ShardRouter } from '../../src/core/routing.js';

const END = 1n << 160n;
const sha1Hex = (text: string): string => createHash('sha1').update(text, 'utf8').digest('hex');
const sha1Int = (text: string): bigint => BigInt(`0x${sha1Hex(text)}`);

/** Asserts `fn` throws config_invalid and that every pattern matches its message. */
function expectConfigError(fn: () => unknown, ...patterns: RegExp[]): string {
  let err: unknown;
  try {
    fn();
  } catch (e) {
    err = e;
  }
  expect(isMillraceError(err, 'config_invalid'), `expected config_invalid, got ${String(err)}`).toBe(true);
  const message = (err as Error).message;
  for (const p of patterns) expect(message).toMatch(p);
  return message;
}

const sqlite = (shards: unknown[], extra: Record<string, unknown> = {}) => ({
  ...extra,
  storage: { dialect: 'sqlite', shards },
});
const postgres = (shards: unknown[]) => ({ storage: { dialect: 'postgres', shards } });

describe('buildConfig', () => {
  it('fills every default when there is no file', () => {
    for (const raw of [undefined, null, {}]) {
      const c = buildConfig(raw, { baseDir: '/srv/mr' });
      expect(c.source).toBeUndefined();
      expect(c.node_id).toBe(`${hostname().slice(0, 80)}-${process.pid}`);
      expect(c.data_dir).toBe(resolve('/srv/mr', 'data'));
      expect(c.http).toEqual({
        host: '127.0.0.1',
        port: 7070,
        body_limit_bytes: 8 * 1024 * 1024,
        drain_timeout_ms: 10_000,
      });
      expect(c.grpc).toEqual({ enabled: true, host: '127.0.0.1', port: 7071 });
      expect(c.logging.level).toBe('info');
      expect(c.storage.dialect).toBe('sqlite');
      expect(c.storage.durability).toBe('strict');
      expect(c.storage.group_commit).toEqual({ max_batch: 2000, writers: 4 });
      expect(c.storage.pool_size).toBe(10);
      expect(c.storage.shards).toEqual([
        { name: 's0', location: resolve('/srv/mr', 'data', 's0.db'), from: 0n, to: END },
      ]);
      expect(c.log).toEqual({ sequencer_batch: 5000, poll_ms: 500 });
      expect(c.cursors.chunk).toBe(1000);
      expect(c.scheduler).toMatchObject({ poll_ms: 1000, batch: 200 });
      expect(c.scheduler.lease_ms).toBeUndefined();
      expect(c.cluster).toEqual({ role_lease_ms: 5000, publish_deadline_ms: 10_000 });
    }
  });

  it('takes cluster.role_lease_ms and cluster.publish_deadline_ms in range, and refuses others with config_invalid naming the key', () => {
    expect(buildConfig({ cluster: { role_lease_ms: 2000, publish_deadline_ms: 3000 } }).cluster).toEqual({
      role_lease_ms: 2000,
      publish_deadline_ms: 3000,
    });
    expectConfigError(() => buildConfig({ cluster: { role_lease_ms: 100 } }), /cluster\.role_lease_ms/);
    expectConfigError(() => buildConfig({ cluster: { role_lease_ms: 'soon' } }), /cluster\.role_lease_ms/);
    expectConfigError(() => buildConfig({ cluster: { publish_deadline_ms: 0 } }), /cluster\.publish_deadline_ms/);
    expectConfigError(() => buildConfig({ cluster: { lease: 1 } }), /cluster: unknown key/);
  });

  it('resolves SQLite paths against data_dir and keeps absolute ones', () => {
    const c = buildConfig(
      sqlite(
        [
          { name: 'a', to: '8' },
          { name: 'b', from: '8', to: 'c', path: 'sub/b.sqlite' },
          { name: 'c', from: 'c', path: '/abs/c.db' },
        ],
        { data_dir: 'var' },
      ),
      { baseDir: '/base' },
    );
    expect(c.data_dir).toBe('/base/var');
    expect(c.storage.shards.map((s) => s.location)).toEqual(['/base/var/a.db', '/base/var/sub/b.sqlite', '/abs/c.db']);
  });

  it('takes PostgreSQL URLs as given', () => {
    const c = buildConfig(postgres([{ name: 'p0', url: 'postgresql://u@h:5432/db' }]));
    expect(c.storage.shards).toEqual([{ name: 'p0', location: 'postgresql://u@h:5432/db', from: 0n, to: END }]);
  });

  it('names the source file in its errors', () => {
    expectConfigError(
      () => buildConfig({ http: { port: 'x' } }, { source: '/etc/millrace.yaml' }),
      /in \/etc\/millrace\.yaml/,
      /http\.port/,
    );
  });

  it('refuses unknown keys at any depth, naming them', () => {
    expectConfigError(() => buildConfig({ htttp: {} }), /\(root\): unknown key\(s\) "htttp"/);
    expectConfigError(() => buildConfig({ http: { prot: 1 } }), /^http: unknown key\(s\) "prot"$/m);
    expectConfigError(
      () => buildConfig({ storage: { group_commit: { max: 1 } } }),
      /storage\.group_commit: unknown key\(s\) "max"/,
    );
    expectConfigError(
      () => buildConfig(sqlite([{ name: 'a', size: 1 }])),
      /storage\.shards\.0: unknown key\(s\) "size"/,
    );
  });

  it('refuses wrong types and out-of-range values without coercion, naming the key and what was expected', () => {
    expectConfigError(() => buildConfig({ http: { port: 'x' } }), /^http\.port: .*expected number.*string/m);
    expectConfigError(() => buildConfig({ http: { port: '7070' } }), /^http\.port: .*expected number/m);
    expectConfigError(() => buildConfig({ http: { port: 70000 } }), /^http\.port: /m);
    expectConfigError(() => buildConfig({ http: { port: 1.5 } }), /^http\.port: .*int/im);
    expectConfigError(() => buildConfig({ grpc: { enabled: 'yes' } }), /^grpc\.enabled: .*expected boolean/m);
    expectConfigError(
      () => buildConfig({ storage: { dialect: 'mysql' } }),
      /^storage\.dialect: .*"sqlite".*"postgres"/m,
    );
    expectConfigError(() => buildConfig({ storage: { shards: [] } }), /^storage\.shards: /m);
    expectConfigError(() => buildConfig(sqlite([{ name: 'Bad Name' }])), /storage\.shards\.0\.name: a lower-case name/);
  });

  it('refuses overlapping ranges', () => {
    expectConfigError(
      () =>
        buildConfig(
          sqlite([
            { name: 'a', to: '8' },
            { name: 'b', from: '7' },
          ]),
        ),
      /^storage\.shards: shard "b" starts at 7, overlapping the previous range that ends at 8$/,
    );
    // Two shards both starting at 0 (the default "from").
    expectConfigError(() => buildConfig(sqlite([{ name: 'a' }, { name: 'b' }])), /storage\.shards: .*overlapping/);
  });

  it('refuses gaps, at the start, in the middle and at the end', () => {
    expectConfigError(
      () => buildConfig(sqlite([{ name: 'a', from: '1' }])),
      /storage\.shards: hash range has a gap from 0 to 1 \(before shard "a"\)/,
    );
    expectConfigError(
      () =>
        buildConfig(
          sqlite([
            { name: 'a', to: '7' },
            { name: 'b', from: '8' },
          ]),
        ),
      /storage\.shards: hash range has a gap from 7 to 8 \(before shard "b"\); the ranges must cover the whole SHA-1 space/,
    );
    // A missing end: no shard reaches the top of the space.
    expectConfigError(
      () => buildConfig(sqlite([{ name: 'a', to: '8' }])),
      /storage\.shards: hash range has a gap from 8 to the end of the SHA-1 space/,
    );
  });

  it('refuses an empty or inverted range', () => {
    expectConfigError(
      () => buildConfig(sqlite([{ name: 'a', from: '8', to: '8' }])),
      /storage\.shards\.0: "to" \(8\) must be above "from" \(8\)/,
    );
    expectConfigError(() => buildConfig(sqlite([{ name: 'a', from: '9', to: '8' }])), /storage\.shards\.0: "to"/);
  });

  it('refuses a duplicate shard name', () => {
    expectConfigError(
      () =>
        buildConfig(
          sqlite([
            { name: 'a', to: '8' },
            { name: 'a', from: '8' },
          ]),
        ),
      /storage\.shards\.1\.name: shard name "a" is used twice/,
    );
  });

  it('refuses a url/path that does not match the dialect', () => {
    expectConfigError(
      () => buildConfig(sqlite([{ name: 'a', url: 'postgres://h/db' }])),
      /storage\.shards\.0\.url: the sqlite dialect takes "path", not "url"/,
    );
    expectConfigError(
      () => buildConfig(postgres([{ name: 'a', path: 'a.db' }])),
      /storage\.shards\.0\.path: the postgres dialect takes "url", not "path"/,
    );
    expectConfigError(
      () => buildConfig(postgres([{ name: 'a' }])),
      /storage\.shards\.0\.url: expected a PostgreSQL URL/,
    );
    expectConfigError(
      () => buildConfig(postgres([{ name: 'a', url: 'mysql://h/db' }])),
      /storage\.shards\.0\.url: expected a URL starting with postgres:\/\//,
    );
    expectConfigError(
      () => buildConfig({ storage: { dialect: 'postgres' } }),
      /storage\.shards: the postgres dialect needs at least one shard/,
    );
  });

  it('validates hex prefix bounds', () => {
    expectConfigError(
      () => buildConfig(sqlite([{ name: 'a', from: 'xyz' }])),
      /storage\.shards\.0\.from: a hex prefix of a SHA-1 hash, 1 to 40 hex digits/,
    );
    expectConfigError(() => buildConfig(sqlite([{ name: 'a', to: '' }])), /storage\.shards\.0\.to: a hex prefix/);
    expectConfigError(
      () => buildConfig(sqlite([{ name: 'a', to: '1'.repeat(41) }])),
      /storage\.shards\.0\.to: a hex prefix/,
    );
    expectConfigError(() => buildConfig(sqlite([{ name: 'a', to: 8 }])), /storage\.shards\.0\.to: .*expected string/);
    // 40 digits, upper case: accepted, exact.
    const cut = 'ABCDEF0123456789ABCDEF0123456789ABCDEF01';
    const c = buildConfig(
      sqlite([
        { name: 'a', to: cut },
        { name: 'b', from: cut.toLowerCase() },
      ]),
    );
    expect(c.storage.shards.map((s) => [s.from, s.to])).toEqual([
      [0n, BigInt(`0x${cut}`)],
      [BigInt(`0x${cut}`), END],
    ]);
  });
});

describe('parseHashBound', () => {
  it('reads a hex prefix as the lowest hash that starts with it', () => {
    expect(parseHashBound('0')).toBe(0n);
    expect(parseHashBound('8')).toBe(1n << 159n);
    expect(parseHashBound('08')).toBe(1n << 155n);
    expect(parseHashBound('80')).toBe(parseHashBound('8'));
    expect(parseHashBound('f'.repeat(40))).toBe(END - 1n);
    expect(parseHashBound('Ab')).toBe(parseHashBound('aB'));
    expect(HASH_SPACE_END).toBe(END);
  });
});

describe('checkCoverage', () => {
  const shard = (name: string, from: bigint, to: bigint): ShardConfig => ({ name, location: `${name}.db`, from, to });

  it('accepts ranges that tile the space, in any order', () => {
    expect(() => checkCoverage([shard('only', 0n, END)])).not.toThrow();
    expect(() => checkCoverage([shard('c', 200n, END), shard('a', 0n, 100n), shard('b', 100n, 200n)])).not.toThrow();
  });

  it('refuses overlaps, gaps and a missing end with config_invalid naming storage.shards', () => {
    expectConfigError(
      () => checkCoverage([shard('a', 0n, 101n), shard('b', 100n, END)]),
      /storage\.shards: shard "b" starts at .*overlapping/,
    );
    expectConfigError(
      () => checkCoverage([shard('a', 0n, 100n), shard('b', 101n, END)]),
      /storage\.shards: hash range has a gap/,
    );
    expectConfigError(
      () => checkCoverage([shard('a', 0n, 100n)]),
      /storage\.shards: hash range has a gap .* to the end/,
    );
    expectConfigError(() => checkCoverage([shard('a', 1n, END)]), /storage\.shards: hash range has a gap from 0/);
    expectConfigError(() => checkCoverage([]), /storage\.shards: hash range has a gap from 0 to the end/);
  });
});

describe('ShardRouter', () => {
  const thirds = (): Array<{ name: string; from: bigint; to: bigint }> => [
    { name: 'a', from: 0n, to: END / 3n },
    { name: 'b', from: END / 3n, to: (END * 2n) / 3n },
    { name: 'c', from: (END * 2n) / 3n, to: END },
  ];

  it('routes every key to the shard whose range holds its SHA-1 (computed independently)', () => {
    const router = new ShardRouter([...thirds()].reverse());
    const seen = new Map<string, number>();
    for (let i = 0; i < 2000; i++) {
      const key = `order-${i}`;
      const s = router.shardFor(key);
      const h = sha1Int(key);
      expect(h >= s.from && h < s.to, key).toBe(true);
      expect(sha1(key)).toBe(h);
      seen.set(s.name, (seen.get(s.name) ?? 0) + 1);
      // Deterministic: the same key, again and through another router, goes the same way.
      expect(router.shardFor(key)).toBe(s);
      expect(new ShardRouter(thirds()).shardFor(key).name).toBe(s.name);
    }
    expect([...seen.keys()].sort()).toEqual(['a', 'b', 'c']);
  });

  it('puts a key whose hash equals a bound in the shard that starts there (ranges are half-open)', () => {
    const key = 'boundary-key';
    const h = sha1Int(key);
    const router = new ShardRouter([
      { name: 'low', from: 0n, to: h },
      { name: 'high', from: h, to: h + 1n },
      { name: 'top', from: h + 1n, to: END },
    ]);
    expect(router.shardFor(key).name).toBe('high');
    const hex = sha1Hex(key);
    const c = buildConfig(
      sqlite([
        { name: 'low', to: hex },
        { name: 'high', from: hex },
      ]),
    );
    expect(new ShardRouter(c.storage.shards).shardFor(key).name).toBe('high');
    const c2 = buildConfig(
      sqlite([
        { name: 'low', to: (h + 1n).toString(16).padStart(40, '0') },
        { name: 'high', from: (h + 1n).toString(16).padStart(40, '0') },
      ]),
    );
    expect(new ShardRouter(c2.storage.shards).shardFor(key).name).toBe('low');
  });

  it('hashes a composite key as the JSON array of its parts', () => {
    expect(shardKeyText('k')).toBe('k');
    expect(shardKeyText(['a', 'bc'])).toBe('["a","bc"]');
    expect(shardKeyText(['a', 'bc'])).not.toBe(shardKeyText(['ab', 'c']));
    const router = new ShardRouter(thirds());
    const key = ['tenant-1', 'order-9'];
    const h = sha1Int(JSON.stringify(key));
    const s = router.shardFor(key);
    expect(h >= s.from && h < s.to).toBe(true);
  });

  it('fails loudly when no range covers a key', () => {
    const router = new ShardRouter([{ name: 'none', from: 0n, to: 1n }]);
    expect(() => router.shardFor('x')).toThrow(/no shard covers hash/);
  });
});
