import { z } from 'zod';

/** Configuration of the bus face (the `bus:` section of millrace.yaml). */
export const busConfigSchema = z.object({}).strict().prefault({});

export type BusConfig = z.output<typeof busConfigSchema>;
