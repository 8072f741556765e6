import { z } from 'zod';

/** Configuration of the ledger face (the `ledger:` section of millrace.yaml). */
export const ledgerConfigSchema = z.object({}).strict().prefault({});

export type LedgerConfig = z.output<typeof ledgerConfigSchema>;
