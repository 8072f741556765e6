import type { FaceSpec } from '../face-spec.js';
import { busConfigSchema } from './config.js';
import { BUS_ERRORS } from './errors.js';
import { BUS_MIGRATIONS } from './migrations.js';
import { BUS_SPLIT_MOVER } from './split-mover.js';

/** What the bus face declares to the runtime. */
export const busSpec = {
  name: 'bus',
  migrations: BUS_MIGRATIONS,
  errors: BUS_ERRORS,
  config: { key: 'bus', schema: busConfigSchema },
  splitMover: BUS_SPLIT_MOVER,
} as const satisfies FaceSpec;
