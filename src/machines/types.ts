import type { Principal } from '../core/principal.js';

export type { MachineEvent } from './history-cache.js';

export type MachineRef = { id: string } | { tag: string };

export interface RequestOptions {
  /** Absolute deadline, ms since the epoch (default: now + the namespace's default timeout). */
  deadline?: number | undefined;
  traceparent?: string | undefined;
  /** Who asked, as established by the transport (for the record; the transport has already authorized the call). */
  principal?: Principal | undefined;
}

/** The GET shape, also what the processor receives as `machine`: defined with the processor wire types. */
export type { MachineView } from './wire.js';

/** One machine in a namespace list. */
export interface MachineSummary {
  id: string;
  status: 'working' | 'failed';
  /** The failure reason as text (JSON when the processor gave a value). */
  reason?: string;
  updated_at: string;
  /** Events in its history. */
  events: number;
  tags: string[];
  timer?: { at: string };
}
