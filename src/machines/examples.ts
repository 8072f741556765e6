import type { ProcessorFn } from './processor.js';

/**
 * Built-in example processor `example.counter` (for the quick start): init
 * sets the count to its args (a number, default 0); a call adds its args (a
 * number, default 1) and answers the new count; every step records an event.
 * A call with a non-number fails the machine (so repair can be tried).
 * Served only when asked for (`machines.examples: true`, `millrace serve --examples`).
 */
const counter: ProcessorFn = (req) => {
  const aux = (req.machine as { aux_state?: { count?: number } | null }).aux_state;
  const count = typeof aux?.count === 'number' ? aux.count : 0;
  if (req.kind === 'signal') {
    if (req.signal.type !== 'init') return { events: [] };
    const start = typeof req.signal.args === 'number' ? req.signal.args : 0;
    return { response: { count: start }, events: [{ set: start }], aux_state: { count: start } };
  }
  if (req.kind === 'repair') return { response: { count }, events: [{ repaired: true }], aux_state: { count } };
  const by = req.args === null || req.args === undefined ? 1 : req.args;
  if (typeof by !== 'number') throw new Error('example.counter: a call adds a number');
  return { response: { count: count + by }, events: [{ added: by }], aux_state: { count: count + by } };
};

/** The built-in example processors, by name. */
export const EXAMPLE_PROCESSORS: ReadonlyMap<string, ProcessorFn> = new Map([['example.counter', counter]]);
