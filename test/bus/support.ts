import { credentials, type ClientDuplexStream, type Client, type ServiceError } from '@grpc/grpc-js';
import { startNode, type Node } from '../../src/serve.js';
import { busFace } from '../../src/bus/face.js';
import type { Bus } from '../../src/bus/bus.js';
import { buildConfig, type ConfigInput } from '../../src/core/config.js';
import { millraceService } from '../../src/api/grpc/protos.js';
import type { TestEnv } from '../support/env.js';

export const TOPICS = ['orders', 'payments', 'dlq'];

export function busInput(env: TestEnv, bus: Record<string, unknown> = {}): ConfigInput {
  return {
    ...env.input,
    grpc: { enabled: true, host: '127.0.0.1', port: 0 },
    http: { port: 0, drain_timeout_ms: 300 },
    bus: { topics: TOPICS, lease_ms: 2000, ...bus },
  } as ConfigInput;
}

export async function startBusNode(
  env: TestEnv,
  bus: Record<string, unknown> = {},
): Promise<{ node: Node; bus: Bus; addr: string }> {
  const node = await startNode(buildConfig(busInput(env, bus)), { faces: [busFace] });
  const face = node.faces.find((f) => f.name === 'bus') as unknown as { bus: Bus };
  return { node, bus: face.bus, addr: `127.0.0.1:${node.grpc!.port}` };
}

/** A stock @grpc/grpc-js client over the repository's proto (camelCase fields, the loader's defaults). */
export interface BusClient extends Client {
  Publish(
    req: unknown,
    cb: (
      err: ServiceError | null,
      res: { positions: Array<{ shard: string; pos: number; duplicate: boolean }> },
    ) => void,
  ): void;
  PublishStream(
    cb: (
      err: ServiceError | null,
      res: { positions: Array<{ shard: string; pos: number; duplicate: boolean }> },
    ) => void,
  ): ClientWritable;
  PublishBatches(): ClientDuplexStream<
    unknown,
    { positions: Array<{ shard: string; pos: number; duplicate: boolean }> }
  >;
  Subscribe(): ClientDuplexStream<unknown, SubscribeResponse>;
}
interface ClientWritable {
  write(m: unknown): boolean;
  end(): void;
}

export interface WireDelivery {
  deliveryId: string;
  shard: string;
  pos: number;
  deliveryCount: number;
  createdAtMs: number;
  event: { id: string; topic: string; key: string; type: string; headers: Record<string, string>; data: string };
}
export interface SubscribeResponse {
  kind: 'opened' | 'delivery' | 'batch';
  opened?: { subscription: string; positions: Record<string, number> };
  delivery?: WireDelivery;
  batch?: { deliveries: WireDelivery[] };
}

const BusClientCtor = millraceService('Bus', 'camel') as unknown as new (
  addr: string,
  creds: ReturnType<typeof credentials.createInsecure>,
) => BusClient;

export function busClient(addr: string): BusClient {
  return new BusClientCtor(addr, credentials.createInsecure());
}

export function publish(
  c: BusClient,
  events: unknown[],
): Promise<Array<{ shard: string; pos: number; duplicate: boolean }>> {
  return new Promise((resolve, reject) =>
    c.Publish({ events }, (err, res) => (err ? reject(err) : resolve(res.positions))),
  );
}

/** A subscriber connection driven by a test. */
export class Subscriber {
  readonly call: ClientDuplexStream<unknown, SubscribeResponse>;
  readonly deliveries: WireDelivery[] = [];
  readonly opened: Promise<SubscribeResponse['opened']>;
  readonly status: Promise<{ code: number; details: string; errorCode: string | undefined }>;
  private ending = false;
  onDelivery: ((d: WireDelivery, s: Subscriber) => void) | undefined;

  /** Messages that carried deliveries (one per delivery unless opened with `batch`). */
  messages = 0;

  constructor(
    client: BusClient,
    name: string,
    config?: Record<string, unknown>,
    onDelivery?: (d: WireDelivery, s: Subscriber) => void,
    opts: { batch?: boolean } = {},
  ) {
    this.onDelivery = onDelivery;
    this.call = client.Subscribe();
    let openedResolve!: (o: SubscribeResponse['opened']) => void;
    let openedReject!: (e: unknown) => void;
    this.opened = new Promise((res, rej) => {
      openedResolve = res;
      openedReject = rej;
    });
    // Marks `opened` handled: whoever awaits it gets the error.
    this.opened.catch(() => {});
    this.status = new Promise((resolve) => {
      this.call.on('status', (s: { code: number; details: string; metadata: { get(k: string): unknown[] } }) => {
        const errorCode = s.metadata.get('error-code')[0];
        resolve({
          code: s.code,
          details: s.details,
          errorCode: errorCode === undefined ? undefined : String(errorCode as string | Buffer),
        });
      });
    });
    this.call.on('error', (e) => openedReject(e));
    this.call.on('data', (m: SubscribeResponse) => {
      if (m.opened) openedResolve(m.opened);
      const ds = m.delivery ? [m.delivery] : (m.batch?.deliveries ?? []);
      if (ds.length > 0) this.messages++;
      for (const d of ds) {
        if (this.ending) return;
        this.deliveries.push(d);
        this.onDelivery?.(d, this);
      }
    });
    this.call.write({
      open: { subscription: name, ...(config ? { config } : {}), ...(opts.batch ? { batch: true } : {}) },
    });
  }

  ack(ids: string[]): void {
    if (!this.ending) this.call.write({ ack: { deliveryIds: ids } });
  }

  nack(id: string, delayMs: number): void {
    this.call.write({ nack: { deliveryId: id, delayMs } });
  }

  /** Graceful disconnect: half-close; the server stores the acked position and ends the call. Later deliveries are ignored. */
  async end(): Promise<void> {
    this.ending = true;
    this.call.end();
    await this.status;
  }

  cancel(): void {
    this.ending = true;
    this.call.cancel();
  }
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
