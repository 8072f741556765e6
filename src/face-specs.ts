import { busSpec } from './bus/spec.js';
import { ledgerSpec } from './ledger/spec.js';
import { machinesSpec } from './machines/spec.js';
import { opsSpec } from './ops/spec.js';
import { pipeSpec } from './pipe/spec.js';

/**
 * What the faces of this build declare (migrations, error codes, config
 * sections), in start order; ops last, as it acts through the others. The
 * config schema is composed from these; a runtime opened without a list of
 * faces migrates for all of them.
 */
export const BUILT_IN_FACE_SPECS = [machinesSpec, ledgerSpec, pipeSpec, busSpec, opsSpec] as const;
