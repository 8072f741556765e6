import type { FaceSpec } from '../face-spec.js';
import { machinesConfigSchema } from './config.js';
import { MACHINES_ERRORS } from './errors.js';
import { MACHINES_MIGRATIONS } from './migrations.js';
import { MACHINES_SPLIT_MOVER } from './split-mover.js';

/** What the machines face declares to the runtime. */
export const machinesSpec = {
  name: 'machines',
  migrations: MACHINES_MIGRATIONS,
  errors: MACHINES_ERRORS,
  config: { key: 'machines', schema: machinesConfigSchema },
  splitMover: MACHINES_SPLIT_MOVER,
} as const satisfies FaceSpec;
