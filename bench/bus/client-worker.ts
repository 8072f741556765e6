/** The client thread's side: runs the tasks the main thread sends (see client-thread.ts). */
import { credentials } from '@grpc/grpc-js';
import { connect, type NatsConnection } from 'nats';
import { parentPort } from 'node:worker_threads';
import { BusCtor, FLOW_WINDOW, NATS_URL, type BusClient } from './common.js';
import { grpcReplay, httpPublish, millraceLatency, millracePublish } from './millrace.js';
import { jetLatency, jetPublish, type Jet, type JetNames } from './jetstream.js';
import type { Task } from './client-thread.js';

/** One gRPC client per node address, one NATS connection. */
function serveClientTasks(): void {
  const clients = new Map<string, BusClient>();
  const busClient = (addr: string): BusClient => {
    let c = clients.get(addr);
    if (!c)
      clients.set(
        addr,
        (c = new BusCtor(
          addr,
          credentials.createInsecure(),
          FLOW_WINDOW ? { 'grpc-node.flow_control_window': FLOW_WINDOW } : {},
        )),
      );
    return c;
  };
  let nats: Promise<NatsConnection> | null = null;
  const jet = async (names: JetNames): Promise<Jet> => {
    const nc = await (nats ??= connect({ servers: NATS_URL, name: 'millrace-bench-client' }));
    return { ...names, nc, jsm: await nc.jetstreamManager(), js: nc.jetstream() };
  };
  const handle = async (task: Task): Promise<unknown> => {
    switch (task.kind) {
      case 'mr-publish':
        return millracePublish(busClient(task.addr), task.mode, task.ms);
      case 'mr-http-publish':
        return httpPublish(task.url, task.ms);
      case 'mr-latency':
        return millraceLatency(busClient(task.addr), task.rate);
      case 'mr-replay':
        return grpcReplay(busClient(task.addr), task.events, task.batch);
      case 'jet-publish':
        return jetPublish(await jet(task.jet), task.inFlight, task.ms);
      case 'jet-latency':
        return jetLatency(await jet(task.jet), task.rate);
      case 'forget':
        clients.get(task.addr)?.close();
        clients.delete(task.addr);
        return null;
      case 'shutdown':
        for (const c of clients.values()) c.close();
        clients.clear();
        if (nats) await (await nats).drain();
        nats = null;
        return null;
    }
  };
  parentPort!.on('message', (m: { id: number; task: Task }) => {
    handle(m.task).then(
      (value) => parentPort!.postMessage({ id: m.id, ok: true, value }),
      (err: unknown) => parentPort!.postMessage({ id: m.id, ok: false, error: (err as Error)?.stack ?? String(err) }),
    );
  });
}

serveClientTasks();
