import { afterEach, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { startNode } from '../../src/serve.js';
import { pipeFace } from '../../src/pipe/face.js';
import { loadConfig } from '../../src/core/config.js';
import { createTestEnv, DIALECTS, waitFor, type TestEnv } from '../support/env.js';
import { HandlerServer } from './support.js';

// The client's 400 writers are mid-session when the kill comes, whatever the target; 2,000 finished sessions
// go through the same paths (open, appends, store, restart, push) as 10,000 did, in a fifth of the time.
const TARGET = 2_000;

interface Acks {
  opened: Set<string>;
  records: Map<string, string[]>;
  stored: Set<string>;
}

/** Runs the crash client until it has finished TARGET sessions, then SIGKILLs it mid-write. */
async function runAndKill(configPath: string): Promise<Acks> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'test/pipe/crash-client.ts', configPath, String(TARGET)], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const acks: Acks = { opened: new Set(), records: new Map(), stored: new Set() };
  let killed = false;
  const rl = createInterface({ input: child.stdout });
  rl.on('line', (text) => {
    const m = JSON.parse(text) as { n?: string; a?: [string, string]; s?: string; target?: boolean };
    if (m.n) acks.opened.add(m.n);
    if (m.a) acks.records.set(m.a[0], [...(acks.records.get(m.a[0]) ?? []), m.a[1]]);
    if (m.s) acks.stored.add(m.s);
    if (m.target && !killed) {
      killed = true;
      child.kill('SIGKILL');
    }
  });
  const guard = setTimeout(() => child.kill('SIGKILL'), 100_000);
  const closed = new Promise<NodeJS.Signals | null>((r) => child.on('close', (_c, signal) => r(signal)));
  const rlClosed = new Promise<void>((r) => rl.once('close', r));
  const signal = await closed;
  await rlClosed;
  clearTimeout(guard);
  if (!killed) throw new Error(`crash client ended before ${TARGET} sessions (signal ${signal}):\n${stderr}`);
  return acks;
}

describe.each(DIALECTS)('pipe crash (%s)', (dialect) => {
  let env: TestEnv | undefined;
  afterEach(async () => {
    await env?.cleanup();
    env = undefined;
  });

  it(`keeps every acknowledged record of ${TARGET} open and stored sessions across kill -9, and pushes each once`, async () => {
    const handler = new HandlerServer();
    const url = await handler.start();
    env = await createTestEnv(dialect, {
      extra: {
        grpc: { enabled: true, port: 0 },
        scheduler: { poll_ms: 20 },
        pipe: {
          session_ttl_s: 120,
          store_jitter_s: 0,
          kinds: { crash: { handler: `${url}/crash`, default_delay_s: 0, concurrency: 64 } },
        },
      } as never,
    });
    const configPath = join(env.dataDir, 'millrace.yaml');
    writeFileSync(configPath, JSON.stringify(env.input));
    try {
      const acks = await runAndKill(configPath);
      expect(acks.opened.size).toBeGreaterThanOrEqual(TARGET);
      expect(acks.stored.size).toBeGreaterThanOrEqual(TARGET / 2 - 400);
      expect(handler.pushes).toEqual([]);

      // Restart an hour later: stored sessions are due, and the dead node's streams are long gone.
      const node = await startNode(loadConfig(configPath), {
        faces: [pipeFace],
        clock: { now: () => Date.now() + 3_600_000 },
      });
      try {
        await waitFor(
          () => new Set(handler.pushes.map((p) => p.id)).size >= acks.opened.size,
          90_000,
          'every session to be pushed',
        );
        // Let a duplicate show up if there were one.
        await new Promise((r) => setTimeout(r, 300));
        const byId = new Map<string, string[][]>();
        for (const p of handler.pushes) byId.set(p.id, [...(byId.get(p.id) ?? []), p.records]);
        for (const [id, pushes] of byId) expect(pushes.length, `session ${id} pushed ${pushes.length} times`).toBe(1);
        for (const id of acks.opened) {
          const pushed = byId.get(id);
          expect(pushed, `session ${id} never came back`).toBeDefined();
          const acked = acks.records.get(id) ?? [];
          const got = pushed![0]!;
          // Every acknowledged record, in order; at most one more (written, its ack lost in the kill).
          expect(got.slice(0, acked.length)).toEqual(acked);
          expect(got.length).toBeLessThanOrEqual(acked.length + 1);
          if (acks.stored.has(id)) expect(got.length).toBe(acked.length);
        }
        expect(handler.pushes.every((p) => p.repeats === 1)).toBe(true);
      } finally {
        await node.close();
      }
    } finally {
      await handler.close();
    }
  }, 200_000);
});
