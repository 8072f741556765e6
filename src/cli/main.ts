import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { Command } from 'commander';
import { loadConfig, type Config } from '../core/config.js';
import { isMillraceError } from '../core/errors.js';
import { createLogger } from '../core/logger.js';
import { verifyShard } from '../log/verify.js';
import { checkpointOf } from '../log/pruner.js';
import { Storage } from '../storage/storage.js';
import { backup, restore } from '../storage/backup.js';
import { nodeMigrations, Runtime } from '../runtime.js';
import { serve } from '../serve.js';
import { BUILT_IN_FACE_SPECS } from '../face-specs.js';
import { exporterStatus } from '../amqp/exporter.js';

function readConfig(path: string | undefined, overrides?: (c: Record<string, unknown>) => void): Config {
  try {
    return loadConfig(path, overrides);
  } catch (err) {
    if (isMillraceError(err, 'config_invalid')) {
      process.stderr.write(`millrace: ${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
}

/** A progress bar of a split: `[#####-----]  50% copy (1234 events)`. */
export function progressLine(phase: string, progress: number, events: number): string {
  const width = 30;
  const done = Math.max(0, Math.min(width, Math.round(progress * width)));
  return `[${'#'.repeat(done)}${'-'.repeat(width - done)}] ${String(Math.floor(progress * 100)).padStart(3)}% ${phase} (${events} events copied)`;
}

/** The version of the installed package (same path from `src/` and from `dist/`). */
export function packageVersion(): string {
  return (createRequire(import.meta.url)('../../package.json') as { version: string }).version;
}

export async function main(argv: string[]): Promise<void> {
  const program = new Command();
  program
    .name('millrace')
    .description('Durable event backbone: machines, ledger, pipe and bus over one hash-chained log.');
  program.version(packageVersion(), '-v, --version', 'print the millrace version');
  program.option('-c, --config <file>', 'config file (default: $MILLRACE_CONFIG, else ./millrace.yaml if present)');

  program
    .command('serve')
    .description('apply migrations and serve the HTTP (and gRPC) API')
    .option(
      '--examples',
      'also serve the built-in example processor example.counter (the quick start; sets machines.examples)',
    )
    .action(async (opts: { examples?: boolean }) => {
      const config = readConfig(program.opts<{ config?: string }>().config, (raw) => {
        if (opts.examples !== true) return;
        const machines = raw.machines;
        raw.machines = {
          ...(typeof machines === 'object' && machines !== null && !Array.isArray(machines) ? machines : {}),
          examples: true,
        };
      });
      try {
        await serve(config);
      } catch (err) {
        if (isMillraceError(err, 'config_invalid')) {
          process.stderr.write(`millrace: config_invalid: ${err.message}\n`);
          process.exit(2);
        }
        throw err;
      }
    });

  program
    .command('migrate')
    .description('apply pending migrations to every shard (a no-op when up to date)')
    .action(async () => {
      const config = readConfig(program.opts<{ config?: string }>().config);
      const storage = Storage.open(config);
      try {
        const applied = await storage.migrate(nodeMigrations(BUILT_IN_FACE_SPECS));
        for (const [shard, ids] of Object.entries(applied)) {
          process.stdout.write(`${shard}: ${ids.length ? `applied ${ids.join(', ')}` : 'up to date'}\n`);
        }
      } finally {
        await storage.close();
      }
    });

  program
    .command('verify')
    .description("walk each shard's hash chain; exit 1 naming the first bad position")
    .option('-s, --shard <name>', 'only this shard')
    .action(async (opts: { shard?: string }) => {
      const config = readConfig(program.opts<{ config?: string }>().config);
      const known = config.storage.shards.map((s) => s.name);
      if (opts.shard !== undefined && !known.includes(opts.shard)) {
        process.stderr.write(`millrace: no shard named "${opts.shard}" (shards: ${known.join(', ')})\n`);
        process.exitCode = 2;
        return;
      }
      const wanted = config.storage.shards.filter((s) => opts.shard === undefined || s.name === opts.shard);
      if (config.storage.dialect === 'sqlite') {
        const missing = wanted.filter((s) => !existsSync(s.location));
        if (missing.length) {
          for (const s of missing) process.stderr.write(`millrace: shard ${s.name} has no database at ${s.location}\n`);
          process.exitCode = 2;
          return;
        }
      }
      const storage = Storage.open(config);
      let failed = false;
      try {
        for (const sc of wanted) {
          const shard = storage.shard(sc.name);
          if (!(await shard.driver.appliedMigrations()).includes('core/0001_log')) {
            process.stdout.write(`${shard.name}: not migrated (run millrace migrate)\n`);
            failed = true;
            continue;
          }
          let lastReport = Date.now();
          const r = await verifyShard(shard, {
            onProgress: (checked, pos) => {
              if (Date.now() - lastReport >= 1000) {
                lastReport = Date.now();
                process.stderr.write(`${shard.name}: ${checked} events checked, at position ${pos}\n`);
              }
            },
          });
          if (r.ok) {
            const pruned =
              r.removed > 0
                ? `; proved from ${r.checkpoint.pos > 0 ? `the pruning checkpoint at position ${r.checkpoint.pos} (hash ${r.checkpoint.hash})` : 'genesis'}` +
                  `${r.gaps > 0 ? ` across ${r.gaps} pruned range(s)` : ''}, ${r.removed} events removed by retention`
                : '';
            process.stdout.write(`${shard.name}: ok, ${r.checked} events, head ${r.head}${pruned}\n`);
          } else {
            failed = true;
            process.stdout.write(`${shard.name}: BROKEN at position ${r.badPos}: ${r.reason}\n`);
          }
        }
      } finally {
        await storage.close();
      }
      if (failed) process.exitCode = 1;
    });

  const retentionCmd = program
    .command('retention')
    .description('retention: what the pruning job has removed (docs/operations.md)');
  retentionCmd
    .command('status')
    .description(
      "per shard: the pruning checkpoint, pruned ranges, per topic the horizon and events removed, and subscriptions' unreported losses",
    )
    .action(async () => {
      const config = readConfig(program.opts<{ config?: string }>().config);
      const storage = Storage.open(config);
      try {
        for (const shard of storage.shards) {
          if (!(await shard.driver.appliedMigrations()).includes('core/0005_retention')) {
            process.stdout.write(`${shard.name}: not migrated (run millrace migrate)\n`);
            continue;
          }
          const cp = await checkpointOf(shard);
          const [g] = await shard.reader.all<{ n: number }>('SELECT COUNT(*) AS n FROM chain_gaps');
          const ranges = Number(g?.n ?? 0) - (cp.pos > 0 ? 1 : 0);
          process.stdout.write(
            `${shard.name}: checkpoint ${cp.pos}${cp.hash ? ` (hash ${cp.hash.toString('hex')})` : ''}, ${ranges} pruned range(s) after it\n`,
          );
          for (const h of await shard.reader.all<{ scope: string; pos: number; removed: number }>(
            'SELECT scope, pos, removed FROM retention_horizons ORDER BY scope',
          )) {
            process.stdout.write(`  ${h.scope}: horizon ${h.pos}, ${h.removed} events removed\n`);
          }
          for (const l of await shard.reader.all<{ cursor: string; lost: number; horizon: number }>(
            'SELECT cursor, lost, horizon FROM retention_lost WHERE lost > 0 ORDER BY cursor',
          )) {
            process.stdout.write(`  ${l.cursor}: ${l.lost} events lost, not yet reported (horizon ${l.horizon})\n`);
          }
        }
      } finally {
        await storage.close();
      }
    });

  program
    .command('backup <dir>')
    .description(
      'online, consistent copy of every shard into <dir> (new or empty), with a manifest of heads and hashes written last',
    )
    .action(async (dir: string) => {
      const config = readConfig(program.opts<{ config?: string }>().config);
      try {
        const m = await backup(config, dir, {
          onShard: (s) =>
            process.stdout.write(
              `${s.name}: copied ${s.events} events, head ${s.head} (hash ${s.headHash ?? '-'}), ${s.bytes} bytes\n`,
            ),
        });
        process.stdout.write(
          `backup complete: ${m.shards.length} shard(s), manifest ${dir}/manifest.json (${m.method})\n`,
        );
      } catch (err) {
        if (!isMillraceError(err)) throw err;
        process.stderr.write(`millrace: ${err.code}: ${err.message}\n`);
        process.exitCode = 2;
      }
    });

  program
    .command('restore <dir>')
    .description(
      'rebuild the configured shards (a new data dir or empty databases) from a backup, then verify their chains against the manifest',
    )
    .action(async (dir: string) => {
      const config = readConfig(program.opts<{ config?: string }>().config);
      let manifest;
      try {
        manifest = await restore(config, dir, {
          onShard: (s) => process.stdout.write(`${s.name}: restored from ${s.file}\n`),
        });
      } catch (err) {
        if (!isMillraceError(err)) throw err;
        process.stderr.write(`millrace: ${err.code}: ${err.message}\n`);
        process.exitCode = 2;
        return;
      }
      const storage = Storage.open(config);
      let failed = false;
      try {
        await storage.migrate(nodeMigrations(BUILT_IN_FACE_SPECS));
        for (const s of manifest.shards) {
          const r = await verifyShard(storage.shard(s.name));
          const at = await storage
            .shard(s.name)
            .reader.all<{ hash: Buffer }>('SELECT hash FROM events WHERE pos = ?', [s.head]);
          const headOk = s.head === 0 ? true : at[0] !== undefined && at[0].hash.toString('hex') === s.headHash;
          if (r.ok && headOk && r.head >= s.head) {
            process.stdout.write(
              `${s.name}: verified, ${r.checked} events, head ${r.head}, manifest head ${s.head} matches\n`,
            );
          } else {
            failed = true;
            process.stdout.write(
              `${s.name}: RESTORE CHECK FAILED: ${r.ok ? `the event at the manifest head ${s.head} does not carry the manifest's hash` : `chain broken at ${r.badPos}: ${r.reason}`}\n`,
            );
          }
        }
      } finally {
        await storage.close();
      }
      if (failed) process.exitCode = 1;
    });

  const exportCmd = program.command('export').description('bus exporters to RabbitMQ');
  exportCmd
    .command('status')
    .description("each exporter's stored position, the shard head and the lag, per shard")
    .action(async () => {
      const config = readConfig(program.opts<{ config?: string }>().config);
      const rt = await Runtime.open(config, { background: false, migrate: false });
      try {
        const rows = await exporterStatus(rt);
        if (rows.length === 0) process.stdout.write('no exporters configured (bus.exporters)\n');
        for (const r of rows)
          process.stdout.write(`${r.name}  ${r.shard}  position ${r.pos} head ${r.head} lag ${r.lag}\n`);
      } finally {
        await rt.close();
      }
    });

  /** A command group that talks to a running node's HTTP API (so the node validates and every node sees the change). */
  const nodeGroup = (cmd: string, description: string) => {
    const group = program.command(cmd).description(description);
    group.option('-u, --url <url>', 'node to talk to (default: $MILLRACE_URL, else http.host:http.port of the config)');
    group.option('-t, --token <token>', 'bearer token (default: $MILLRACE_TOKEN, else $MILLRACE_ADMIN_TOKEN)');
    const base = (): string => {
      const url = group.opts<{ url?: string }>().url ?? process.env.MILLRACE_URL;
      if (url) return url.replace(/\/$/, '');
      const config = readConfig(program.opts<{ config?: string }>().config);
      return `http://${config.http.host}:${config.http.port}`;
    };
    const send = async (method: string, path: string, body?: string): Promise<void> => {
      const token =
        group.opts<{ token?: string }>().token ?? process.env.MILLRACE_TOKEN ?? process.env.MILLRACE_ADMIN_TOKEN;
      const headers: Record<string, string> = {};
      if (token) headers.authorization = `Bearer ${token}`;
      if (body !== undefined) headers['content-type'] = 'application/json';
      const r = await fetch(`${base()}${path}`, { method, headers, ...(body === undefined ? {} : { body }) });
      const text = await r.text();
      (r.ok ? process.stdout : process.stderr).write(text ? `${text}\n` : '');
      if (!r.ok) process.exitCode = 1;
    };
    /** The answer's JSON, or undefined after writing an error answer to stderr (exit code 1). */
    const fetchJson = async (method: string, path: string, body?: string): Promise<unknown> => {
      const token =
        group.opts<{ token?: string }>().token ?? process.env.MILLRACE_TOKEN ?? process.env.MILLRACE_ADMIN_TOKEN;
      const headers: Record<string, string> = {};
      if (token) headers.authorization = `Bearer ${token}`;
      if (body !== undefined) headers['content-type'] = 'application/json';
      const r = await fetch(`${base()}${path}`, { method, headers, ...(body === undefined ? {} : { body }) });
      const text = await r.text();
      if (r.ok) return JSON.parse(text) as unknown;
      process.stderr.write(text ? `${text}\n` : `HTTP ${r.status}\n`);
      process.exitCode = 1;
      return undefined;
    };
    return { group, send, fetchJson };
  };

  // Runtime definitions.
  for (const [cmd, path, what] of [
    ['topics', '/v1/bus/topics', 'bus topics'],
    ['namespaces', '/v1/namespaces', 'machine namespaces'],
    ['kinds', '/v1/pipe/kinds', 'pipe kinds'],
  ] as const) {
    const { group, send } = nodeGroup(
      cmd,
      `${what} from the config file and defined at runtime, over a node's HTTP API`,
    );
    group
      .command('list')
      .description(`list ${what}`)
      .action(() => send('GET', path));
    group.command('get <name>').action((name: string) => send('GET', `${path}/${encodeURIComponent(name)}`));
    group
      .command('put <name> [json]')
      .description('define or redefine (the JSON definition, or stdin)')
      .action(async (name: string, json?: string) => {
        let body = json;
        if (body === undefined) {
          const chunks: Buffer[] = [];
          for await (const c of process.stdin) chunks.push(c as Buffer);
          body = Buffer.concat(chunks).toString('utf8') || '{}';
        }
        await send('PUT', `${path}/${encodeURIComponent(name)}`, body);
      });
    group.command('delete <name>').action((name: string) => send('DELETE', `${path}/${encodeURIComponent(name)}`));
  }

  // API tokens (permission auth:admin).
  {
    const { group, send } = nodeGroup('tokens', "API tokens, over a node's HTTP API (needs auth:admin)");
    group
      .command('create <name> <permissions...>')
      .description(
        'create a token with these permissions (e.g. bus:publish:orders machines:read:*); prints its secret once',
      )
      .option('-e, --expires-in <seconds>', 'expire after this many seconds')
      .action(async (name: string, permissions: string[], o: { expiresIn?: string }) => {
        const body: Record<string, unknown> = { name, permissions };
        if (o.expiresIn !== undefined) {
          if (!/^\d+$/.test(o.expiresIn)) {
            process.stderr.write('millrace: --expires-in takes a whole number of seconds\n');
            process.exitCode = 2;
            return;
          }
          body.expires_in_s = Number(o.expiresIn);
        }
        await send('POST', '/v1/auth/tokens', JSON.stringify(body));
      });
    group
      .command('list')
      .description('list tokens (no secrets)')
      .action(() => send('GET', '/v1/auth/tokens?limit=500'));
    group
      .command('revoke <id>')
      .description('revoke a token at once, on every node')
      .action((id: string) => send('DELETE', `/v1/auth/tokens/${encodeURIComponent(id)}`));
  }

  // Shards: ranges, sizes, splits (docs/operations.md, growing from one shard to many).
  {
    const { group, send, fetchJson } = nodeGroup('shards', "shards and splits, over a node's HTTP API");
    group
      .command('list')
      .description('shards with their ranges, sizes and head positions, and splits with their progress')
      .action(() => send('GET', '/v1/shards'));
    group
      .command('split <shard>')
      .description(
        "move the upper part of a shard's hash range, from --at on, to a spare shard; shows progress until it is done",
      )
      .requiredOption(
        '--at <hex>',
        'hex prefix of the first hash that moves (e.g. 8 moves the upper half of a shard owning everything)',
      )
      .requiredOption(
        '--to <shard>',
        'the spare shard (configured with spare: true on every node): its name, URL or file',
      )
      .option('--no-wait', 'start the split and return')
      .action(async (shard: string, o: { at: string; to: string; wait: boolean }) => {
        const started = await fetchJson(
          'POST',
          `/v1/shards/${encodeURIComponent(shard)}/split`,
          JSON.stringify({ at: o.at, to: o.to }),
        );
        if (started === undefined) return;
        const id = (started as { id: string }).id;
        if (!o.wait) {
          process.stdout.write(`${JSON.stringify(started)}\n`);
          return;
        }
        const tty = process.stdout.isTTY === true;
        let last = '';
        for (;;) {
          const all = (await fetchJson('GET', '/v1/shards')) as
            | {
                splits: Array<{ id: string; phase: string; progress: number; copied_events: number; aborted?: string }>;
              }
            | undefined;
          if (all === undefined) return;
          const j = all.splits.find((x) => x.id === id);
          if (j === undefined) break;
          const line = progressLine(j.phase, j.progress, j.copied_events);
          if (line !== last) process.stdout.write(tty ? `\r${line}` : `${line}\n`);
          last = line;
          if (j.phase === 'done' || j.phase === 'aborted') {
            if (tty) process.stdout.write('\n');
            if (j.phase === 'aborted') {
              process.stderr.write(`split ${id} aborted: ${j.aborted ?? 'see the node log'}\n`);
              process.exitCode = 1;
              return;
            }
            break;
          }
          await new Promise((r) => setTimeout(r, 250));
        }
        process.stdout.write(`split ${id} done\n`);
      });
  }

  const configCmd = program.command('config').description('configuration tools');
  configCmd
    .command('check')
    .description('validate the configuration and print it with defaults filled in')
    .action(() => {
      const config = readConfig(program.opts<{ config?: string }>().config);
      const printable = {
        ...config,
        storage: {
          ...config.storage,
          shards: config.storage.shards.map((s) => ({
            name: s.name,
            location: s.location.replace(/\/\/([^:@/]+):[^@]*@/, '//$1:***@'),
            from: s.from.toString(16),
            to: s.to.toString(16),
          })),
        },
      };
      process.stdout.write(
        `config ok${config.source ? ` (${config.source})` : ' (defaults)'}\n${JSON.stringify(printable, null, 2)}\n`,
      );
    });

  await program.parseAsync(argv);
}

export { createLogger };
