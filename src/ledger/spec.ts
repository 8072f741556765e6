import type { FaceSpec } from '../face-spec.js';
import { ledgerConfigSchema } from './config.js';
import { LEDGER_ERRORS } from './errors.js';
import { LEDGER_MIGRATIONS } from './migrations.js';
import { LEDGER_SPLIT_MOVER } from './split-mover.js';

/** What the ledger face declares to the runtime. */
export const ledgerSpec = {
  name: 'ledger',
  migrations: LEDGER_MIGRATIONS,
  errors: LEDGER_ERRORS,
  config: { key: 'ledger', schema: ledgerConfigSchema },
  splitMover: LEDGER_SPLIT_MOVER,
} as const satisfies FaceSpec;
