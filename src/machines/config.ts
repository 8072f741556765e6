import { z } from 'zod';

/** Configuration of the machines face (the `machines:` section of millrace.yaml). */
export const machinesConfigSchema = z.object({}).strict().prefault({});

export type MachinesConfig = z.output<typeof machinesConfigSchema>;
