import type { FaceFactory } from './face.js';

/**
 * Every face this build serves, in start order. Importing a face module also
 * registers its migrations.
 */
export const faceFactories: FaceFactory[] = [
  // machines
  // ledger
  // pipe
  // bus
];
