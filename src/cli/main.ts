import { Command } from 'commander';
import { loadConfig, type Config } from '../core/config.js';
import { isMillraceError } from '../core/errors.js';
import { createLogger } from '../core/logger.js';
import { verifyShard } from '../log/verify.js';
import { Runtime } from '../runtime.js';
import { allMigrations } from '../storage/migrations.js';
import { Storage } from '../storage/storage.js';
import { serve } from '../serve.js';
import { exporterStatus } from '../amqp/exporter.js';

function readConfig(path: string | undefined): Config {
  try {
    return loadConfig(path);
  } catch (err) {
    if (isMillraceError(err, 'config_invalid')) {
      process.stderr.write(`millrace: ${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
}

export async function main(argv: string[]): Promise<void> {
  const program = new Command();
  program.name('millrace').description('Durable event backbone: machines, ledger, pipe and bus over one hash-chained log.');
  program.option('-c, --config <file>', 'config file (default: $MILLRACE_CONFIG, else ./millrace.yaml if present)');

  program
    .command('serve')
    .description('apply migrations and serve the HTTP (and gRPC) API')
    .action(async () => {
      const config = readConfig(program.opts<{ config?: string }>().config);
      await serve(config);
    });

  program
    .command('migrate')
    .description('apply pending migrations to every shard (a no-op when up to date)')
    .action(async () => {
      const config = readConfig(program.opts<{ config?: string }>().config);
      const storage = Storage.open(config);
      try {
        const applied = await storage.migrate(allMigrations());
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
      const rt = await Runtime.open(config, { background: false, migrate: false });
      let failed = false;
      try {
        const shards = opts.shard ? [rt.storage.shard(opts.shard)] : rt.storage.shards;
        for (const shard of shards) {
          let lastReport = Date.now();
          const r = await verifyShard(shard, {
            onProgress: (checked, pos) => {
              if (Date.now() - lastReport >= 1000) {
                lastReport = Date.now();
                process.stderr.write(`${shard.name}: ${checked} events checked, at position ${pos}\n`);
              }
            },
          });
          if (r.ok) process.stdout.write(`${shard.name}: ok, ${r.checked} events, head ${r.head}\n`);
          else {
            failed = true;
            process.stdout.write(`${shard.name}: BROKEN at position ${r.badPos}: ${r.reason}\n`);
          }
        }
      } finally {
        await rt.close();
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
        for (const r of rows) process.stdout.write(`${r.name}  ${r.shard}  position ${r.pos} head ${r.head} lag ${r.lag}\n`);
      } finally {
        await rt.close();
      }
    });

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
          shards: config.storage.shards.map((s) => ({ name: s.name, location: s.location.replace(/\/\/([^:@/]+):[^@]*@/, '//$1:***@'), from: s.from.toString(16), to: s.to.toString(16) })),
        },
      };
      process.stdout.write(`config ok${config.source ? ` (${config.source})` : ' (defaults)'}\n${JSON.stringify(printable, null, 2)}\n`);
    });

  await program.parseAsync(argv);
}

export { createLogger };
