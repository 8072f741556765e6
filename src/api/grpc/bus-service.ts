import type { Server, ServerDuplexStream, ServerReadableStream, ServerUnaryCall, sendUnaryData } from '@grpc/grpc-js';
import { millraceService } from './protos.js';
import { badRequest, MillraceError } from '../../core/errors.js';
import type { Bus } from '../../bus/bus.js';
import type { DeliverySession } from '../../bus/delivery.js';
import type { PublishEvent, Published } from '../../bus/publisher.js';
import { toGrpcError } from './errors.js';
import { callGuard } from './call-guard.js';

interface PbEvent {
  id?: string;
  topic?: string;
  key?: string;
  type?: string;
  headers?: Record<string, string>;
  data?: string;
}

interface PbConfig {
  topics?: string[];
  filter?: { types?: string[]; key_prefix?: string; headers?: Record<string, string> } | null;
  start?: string;
  ack_wait_ms?: number;
  max_in_flight?: number;
  max_deliveries?: number;
  dead_letter_topic?: string;
  on_expired?: string;
}

interface PbSubscribeRequest {
  kind?: 'open' | 'ack' | 'nack';
  open?: { subscription?: string; config?: PbConfig | null; batch?: boolean };
  ack?: { delivery_ids?: string[] };
  nack?: { delivery_id?: string; delay_ms?: number };
}

function fromPb(events: PbEvent[] | undefined): PublishEvent[] {
  if (!Array.isArray(events) || events.length === 0) throw badRequest('events must be a non-empty list');
  return events.map((e, i) => {
    let data: unknown = null;
    if (e.data) {
      try {
        data = JSON.parse(e.data);
      } catch {
        throw badRequest(`events[${i}].data is not valid JSON text`);
      }
    }
    const out: PublishEvent = { topic: e.topic ?? '', type: e.type ?? '', data };
    if (e.id) out.id = e.id;
    if (e.key) out.key = e.key;
    if (e.headers && Object.keys(e.headers).length) out.headers = e.headers;
    return out;
  });
}

/** The proto's subscription config as the JSON shape the bus validates (zero values mean "default"). */
export function configFromPb(c: PbConfig): Record<string, unknown> {
  const out: Record<string, unknown> = { topics: c.topics ?? [] };
  const f = c.filter;
  if (f) {
    const filter: Record<string, unknown> = {};
    if (f.types?.length) filter.types = f.types;
    if (f.key_prefix) filter.key_prefix = f.key_prefix;
    if (f.headers && Object.keys(f.headers).length) filter.headers = f.headers;
    out.filter = filter;
  }
  if (c.start) out.start = c.start;
  if (c.ack_wait_ms) out.ack_wait_ms = c.ack_wait_ms;
  if (c.max_in_flight) out.max_in_flight = c.max_in_flight;
  if (c.max_deliveries) out.max_deliveries = c.max_deliveries;
  if (c.dead_letter_topic) out.dead_letter_topic = c.dead_letter_topic;
  if (c.on_expired) out.on_expired = c.on_expired;
  return out;
}

const positionsPb = (ps: Published[]) => ({
  positions: ps.map((p) => ({ shard: p.shard, pos: p.pos, duplicate: p.duplicate })),
});

/** The `millrace.v1.Bus` service over a Bus. */
export function registerBusService(server: Server, bus: Bus): void {
  server.addService(millraceService('Bus').service, {
    Publish: (call: ServerUnaryCall<{ events?: PbEvent[] }, unknown>, cb: sendUnaryData<unknown>) => {
      Promise.resolve()
        .then(() => bus.publish(fromPb(call.request.events)))
        .then(
          (ps) => cb(null, positionsPb(ps)),
          (err: unknown) => cb(toGrpcError(err)),
        );
    },
    PublishStream: (call: ServerReadableStream<{ events?: PbEvent[] }, unknown>, cb: sendUnaryData<unknown>) => {
      const guard = callGuard(call);
      const all: Published[] = [];
      let chain: Promise<void> = Promise.resolve();
      let failed = false;
      call.on('data', (req: { events?: PbEvent[] }) => {
        chain = chain.then(async () => {
          if (failed) return;
          try {
            guard.check(req);
            all.push(...(await bus.publish(fromPb(req.events))));
          } catch (err) {
            failed = true;
            cb(toGrpcError(err));
          }
        });
      });
      call.on('end', () => {
        void chain.then(() => {
          if (!failed) cb(null, positionsPb(all));
        });
      });
    },
    PublishBatches: (call: ServerDuplexStream<{ events?: PbEvent[] }, unknown>) => {
      // Per-key order must hold across the batches of a call: where storage commits in submission order
      // the batches are pipelined (submitted at once, answered in order), else each waits for the previous.
      const pipelined = bus.keepsSubmissionOrder;
      const guard = callGuard(call);
      let chain: Promise<void> = Promise.resolve();
      let failed = false;
      let ended = false;
      let refused = false;
      call.on('data', (req: { events?: PbEvent[] }) => {
        if (refused) return;
        // Checked on arrival: a refused batch stops every batch after it, pipelined or not.
        let valid: PublishEvent[] | null = null;
        let invalid: unknown = null;
        try {
          guard.check(req);
          valid = bus.validate(fromPb(req.events));
        } catch (err) {
          refused = true;
          invalid = err;
        }
        const early = pipelined && valid !== null ? bus.publishValid(valid) : null;
        // Marks the early publish handled until the chain below awaits it and answers with its error.
        early?.catch(() => {});
        chain = chain.then(async () => {
          if (failed || call.cancelled) return;
          try {
            if (valid === null) throw invalid;
            const ps = await (early ?? bus.publishValid(valid));
            if (!call.cancelled) call.write(positionsPb(ps));
          } catch (err) {
            failed = true;
            call.emit('error', toGrpcError(err));
          }
        });
      });
      call.on('end', () => {
        if (ended) return;
        ended = true;
        void chain.then(() => {
          if (!failed) call.end();
        });
      });
    },
    Subscribe: (call: ServerDuplexStream<PbSubscribeRequest, unknown>) => handleSubscribe(call, bus),
  });
}

function handleSubscribe(call: ServerDuplexStream<PbSubscribeRequest, unknown>, bus: Bus): void {
  const guard = callGuard(call);
  let session: DeliverySession | null = null;
  let opening: Promise<void> | null = null;
  let done = false;
  const fail = (err: unknown) => {
    if (done) return;
    done = true;
    call.emit('error', toGrpcError(err));
  };
  const finish = () => {
    if (done) return;
    done = true;
    call.end();
  };
  call.on('data', (msg: PbSubscribeRequest) => {
    if (done) return;
    try {
      if (msg.kind === 'open' || (msg.open && !msg.kind)) {
        if (opening) throw badRequest('the subscription is already open on this call');
        guard.check(msg);
        const name = msg.open?.subscription ?? '';
        const config = msg.open?.config ? configFromPb(msg.open.config) : undefined;
        // Batched calls gather the deliveries of one turn of the event loop into one message.
        let batch: unknown[] = [];
        const flush = (): void => {
          const deliveries = batch;
          batch = [];
          if (!done && deliveries.length > 0) call.write({ batch: { deliveries } });
        };
        const batched = msg.open?.batch === true;
        opening = bus
          .open(name, config, {
            deliver: (d) => {
              if (done) return;
              const delivery = {
                delivery_id: d.deliveryId,
                shard: d.shard,
                pos: d.pos,
                event: { id: d.id, topic: d.topic, key: d.key, type: d.type, headers: d.headers, data: d.data },
                delivery_count: d.deliveryCount,
                created_at_ms: d.createdAt,
              };
              if (!batched) call.write({ delivery });
              else if (batch.push(delivery) === 1) setImmediate(flush);
              else if (batch.length >= 1000) flush();
            },
            gap: (g) => {
              if (done) return;
              flush();
              call.write({ gap: { shard: g.shard, lost: g.lost, horizon: g.horizon } });
            },
            closed: (err) => {
              flush();
              if (err) fail(err);
              else finish();
            },
          })
          .then((s) => {
            session = s;
            if (done || call.cancelled) {
              void s.close();
              return;
            }
            call.write({ opened: { subscription: name, positions: s.positions() } });
          }, fail);
        return;
      }
      if (!session) throw badRequest('the first message must be "open"');
      if (msg.kind === 'ack' || msg.ack) session.ack(msg.ack?.delivery_ids ?? []);
      else if (msg.kind === 'nack' || msg.nack) session.nack(msg.nack?.delivery_id ?? '', msg.nack?.delay_ms ?? 0);
      else throw badRequest('a message must hold open, ack or nack');
    } catch (err) {
      if (session) void (session as DeliverySession).close(err instanceof MillraceError ? err : null);
      else fail(err);
    }
  });
  call.on('end', () => {
    void (opening ?? Promise.resolve()).then(async () => {
      if (session) await session.close();
      finish();
    });
  });
  call.on('cancelled', () => {
    done = true;
    void (opening ?? Promise.resolve()).then(() => session?.close());
  });
  call.on('error', () => {
    void (opening ?? Promise.resolve()).then(() => session?.close());
  });
}
