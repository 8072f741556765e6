import { z } from 'zod';

/** Configuration of the pipe face (the `pipe:` section of millrace.yaml). */
export const pipeConfigSchema = z.object({}).strict().prefault({});

export type PipeConfig = z.output<typeof pipeConfigSchema>;
