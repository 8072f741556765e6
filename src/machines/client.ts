/** The machines HTTP client lives in the SDK (`millrace/sdk`); kept here for the package entry point and tests. */
export { MachinesClient } from '../sdk/clients.js';
export type { CallOptions } from '../sdk/transport.js';
