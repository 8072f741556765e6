import type { FaceSpec } from '../face-spec.js';
import { OPS_ERRORS } from './errors.js';
import { OPS_MIGRATIONS } from './migrations.js';
import { schedulesConfigSchema } from './schedule-spec.js';

/** What the ops face (schedules, bulk jobs, pause and resume) declares to the runtime; its config section is `schedules`. */
export const opsSpec = {
  name: 'ops',
  migrations: OPS_MIGRATIONS,
  errors: OPS_ERRORS,
  config: { key: 'schedules', schema: schedulesConfigSchema },
} as const satisfies FaceSpec;
