/**
 * Every client of the bus benchmark (publishers and subscribers of both
 * systems) runs in one worker thread (client-worker.ts), so the millrace node
 * has the main thread's event loop to itself, as nats-server has its own process.
 */
import { Worker } from 'node:worker_threads';
import type { JetNames } from './jetstream.js';
import type { Mode } from './common.js';

export type Task =
  | { kind: 'mr-publish'; addr: string; mode: Mode; ms: number }
  | { kind: 'mr-http-publish'; url: string; ms: number }
  | { kind: 'mr-latency'; addr: string; rate: number }
  | { kind: 'mr-replay'; addr: string; events: number; batch: boolean }
  | { kind: 'jet-publish'; jet: JetNames; inFlight: number; ms: number }
  | { kind: 'jet-latency'; jet: JetNames; rate: number }
  | { kind: 'forget'; addr: string }
  | { kind: 'shutdown' };

export class ClientThread {
  private readonly worker: Worker;
  private next = 0;
  private readonly waiting = new Map<number, { resolve: (v: unknown) => void; reject: (e: unknown) => void }>();

  constructor() {
    // tsx's hooks do not follow into workers by themselves: register them, then load this module.
    this.worker = new Worker(
      `import('tsx/esm/api').then((t) => { t.register(); return import(${JSON.stringify(new URL('./client-worker.ts', import.meta.url).href)}); })`,
      {
        eval: true,
      },
    );
    this.worker.on('message', (m: { id: number; ok: boolean; value?: unknown; error?: string }) => {
      const w = this.waiting.get(m.id);
      this.waiting.delete(m.id);
      if (m.ok) w?.resolve(m.value);
      else w?.reject(new Error(`client thread: ${m.error}`));
    });
    this.worker.on('error', (err) => {
      for (const w of this.waiting.values()) w.reject(err);
      this.waiting.clear();
    });
  }

  run<T>(task: Task): Promise<T> {
    const id = this.next++;
    return new Promise<T>((resolve, reject) => {
      this.waiting.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.worker.postMessage({ id, task });
    });
  }

  async close(): Promise<void> {
    // Closing: a worker that cannot answer the shutdown is ended by the thread's exit.
    await this.run({ kind: 'shutdown' }).catch(() => {});
    await this.worker.terminate();
  }
}

let theClientThread: ClientThread | null = null;
/** The one client thread, started on first use. */
export const clientThread = (): ClientThread => (theClientThread ??= new ClientThread());
/** Stops the client thread (the next use starts another). */
export async function closeClientThread(): Promise<void> {
  const ct = theClientThread;
  theClientThread = null;
  await ct?.close();
}
