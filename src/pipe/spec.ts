import type { FaceSpec } from '../face-spec.js';
import { pipeConfigSchema } from './config.js';
import { PIPE_ERRORS } from './error-codes.js';
import { PIPE_MIGRATIONS } from './migrations.js';
import { PIPE_SPLIT_MOVER } from './split-mover.js';

/** What the pipe face declares to the runtime. */
export const pipeSpec = {
  name: 'pipe',
  migrations: PIPE_MIGRATIONS,
  errors: PIPE_ERRORS,
  config: { key: 'pipe', schema: pipeConfigSchema },
  splitMover: PIPE_SPLIT_MOVER,
} as const satisfies FaceSpec;
