/**
 * The `millrace` command run from source: what bin/millrace.js does over dist,
 * without needing a build. Usage: node --import tsx test/support/cli.ts <args>.
 */
import { main } from '../../src/cli/main.js';

main(process.argv).catch((err: unknown) => {
  process.stderr.write(`${(err as Error)?.stack ?? String(err)}\n`);
  process.exit(1);
});
