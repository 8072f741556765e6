import type { ConfigInput } from '../../src/core/config.js';
import type { TestEnv } from './env.js';

/** A two-shard test env's config with s0 owning the whole hash space and s1 a spare (the target of a split). */
export function withSpare(env: TestEnv): ConfigInput {
  const input = structuredClone(env.input) as ConfigInput & { storage: { shards: Array<Record<string, unknown>> } };
  const [s0, s1] = input.storage.shards;
  delete s0!.to;
  s0!.from = '0';
  delete s1!.to;
  delete s1!.from;
  s1!.spare = true;
  return input;
}
