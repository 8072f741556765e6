import { badRequest, MillraceError } from '../core/errors.js';
import { pausesOf, type PauseInfo, type PauseKind, type Pauses } from '../catalog/pauses.js';
import type { Runtime } from '../runtime.js';
import type { Machines } from '../machines/machines.js';
import type { Bus } from '../bus/bus.js';
import type { Pipe } from '../pipe/pipe.js';

/** Pausing and resuming, with the target checked through its face first (a typed error, nothing written, for an unknown one). */
export class PauseControl {
  readonly pauses: Pauses;

  constructor(
    private readonly rt: Runtime,
    private readonly targets: { machines?: Machines | undefined; bus?: Bus | undefined; pipe?: Pipe | undefined },
  ) {
    this.pauses = pausesOf(rt.catalog);
  }

  /** The stored name of a target, after checking it exists. */
  private async resolve(kind: PauseKind, name: string, id?: string): Promise<string> {
    switch (kind) {
      case 'namespace':
        this.need(this.targets.machines, 'machines').nsConfig(name);
        return name;
      case 'machine': {
        const m = this.need(this.targets.machines, 'machines');
        await m.get(name, { id: id! }, { limit: 1 });
        return `${name}/${id!}`;
      }
      case 'subscription':
        await this.need(this.targets.bus, 'the bus').getSubscription(name);
        return name;
      case 'pipe_kind':
        return this.need(this.targets.pipe, 'the pipe').resolveKind(name);
      case 'exporter':
        if (!this.rt.config.bus.exporters.some((x) => x.name === name))
          throw new MillraceError('exporter_not_found', `no exporter "${name}"`, { details: { name } });
        return name;
    }
  }

  private need<T>(face: T | undefined, what: string): T {
    if (face === undefined) throw badRequest(`this node does not serve ${what}`);
    return face;
  }

  async pause(kind: PauseKind, name: string, body: unknown, id?: string): Promise<PauseInfo> {
    const reason = reasonOf(body);
    const stored = await this.resolve(kind, name, id);
    return this.pauses.pause(kind, stored, reason);
  }

  async resume(
    kind: PauseKind,
    name: string,
    id?: string,
  ): Promise<{ kind: PauseKind; name: string; resumed: boolean }> {
    const stored = await this.resolve(kind, name, id);
    return { kind, name: stored, resumed: await this.pauses.resume(kind, stored) };
  }

  list(): PauseInfo[] {
    return this.pauses.list();
  }
}

function reasonOf(body: unknown): string | null {
  if (body === undefined || body === null) return null;
  if (typeof body !== 'object' || Array.isArray(body))
    throw badRequest('the body must be an object: {"reason": "..."}');
  const keys = Object.keys(body);
  if (keys.some((k) => k !== 'reason')) throw badRequest('the body takes only "reason"');
  const r = (body as { reason?: unknown }).reason;
  if (r === undefined) return null;
  if (typeof r !== 'string' || r.length > 500) throw badRequest('reason must be a string of at most 500 characters');
  return r;
}
