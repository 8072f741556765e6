import type { FastifyInstance } from 'fastify';
import type { AccountQuery, BatchRequest, Ledger, LockMode } from '../../ledger/ledger.js';
import { errorSchema } from './schemas.js';

const attrs = { type: 'object', additionalProperties: { type: 'string', maxLength: 256 }, maxProperties: 64 } as const;
const dt = { type: 'string', maxLength: 64 } as const;
const name = { type: 'string', minLength: 1, maxLength: 100 } as const;
const uid = { type: 'string', minLength: 1, maxLength: 200 } as const;

const account = {
  type: 'object',
  additionalProperties: false,
  required: ['type', 'key'],
  properties: {
    type: name,
    key: attrs,
    group_by: { type: 'array', items: { type: 'string', maxLength: 63 }, maxItems: 64 },
    filter: attrs,
  },
} as const;
const accounts = { type: 'array', items: account, minItems: 1, maxItems: 1000 } as const;

const batchSchema = {
  type: 'object',
  additionalProperties: false,
  properties: {
    idempotency_key: { type: 'string', minLength: 1, maxLength: 200 },
    dt_default: dt,
    events: {
      type: 'array',
      maxItems: 100_000,
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['account', 'side', 'amount'],
        properties: {
          account: {
            type: 'object',
            additionalProperties: false,
            required: ['type', 'attrs'],
            properties: { type: name, attrs },
          },
          side: { type: 'string', enum: ['debit', 'credit'] },
          amount: { type: 'string', minLength: 1, maxLength: 64 },
          dt,
          info: {},
        },
      },
    },
    locks: {
      type: 'array',
      maxItems: 100,
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['type', 'attrs', 'uid'],
        properties: { type: name, attrs, uid },
      },
    },
    states: {
      type: 'array',
      maxItems: 100,
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['type', 'attrs', 'state'],
        properties: { type: name, attrs, state: {}, expected_version: { type: 'integer', minimum: 0 } },
      },
    },
  },
} as const;

const obj = (required: string[], properties: Record<string, unknown>) => ({
  type: 'object',
  additionalProperties: false,
  required,
  properties,
});
const timeout = { type: 'number', exclusiveMinimum: 0 } as const;

/** Error answers of the ledger routes, in the shape every route shares. */
const errors = {
  400: errorSchema,
  404: errorSchema,
  409: errorSchema,
  422: errorSchema,
  503: errorSchema,
  504: errorSchema,
};
/** A 200 answer naming its top-level fields (nested values as the ledger gives them), plus the error answers. */
const answer = (properties: Record<string, unknown>) => ({
  200: { type: 'object', additionalProperties: true, properties },
  ...errors,
});
const str = { type: 'string' } as const;
const attrsOut = { type: 'object', additionalProperties: { type: 'string' } } as const;
const list = { type: 'array', items: {} } as const;
const lockOut = answer({ type: str, attrs: attrsOut, uid: str, mode: str, expires_at: str });

/** HTTP JSON transport of the ledger under /v1/ledger: thin adapters over `Ledger`. */
export function registerLedgerRoutes(app: FastifyInstance, ledger: Ledger): void {
  const tags = ['ledger'];
  const keyed = {
    type: 'object',
    properties: {
      key: { type: 'array', items: { type: 'string' } },
      shard_key: { type: 'array', items: { type: 'string' } },
    },
  } as const;
  app.get(
    '/v1/ledger/types',
    {
      schema: {
        operationId: 'getLedgerTypes',
        tags,
        summary:
          'The account, lock and state types of the ledger config (read-only: ledger types are defined in the config file only)',
        response: {
          200: {
            type: 'object',
            properties: {
              accounts: {
                type: 'object',
                additionalProperties: {
                  type: 'object',
                  properties: {
                    key: { type: 'array', items: { type: 'string' } },
                    aux: { type: 'array', items: { type: 'string' } },
                    groupings: { type: 'array', items: { type: 'array', items: { type: 'string' } } },
                    shard_key: { type: 'array', items: { type: 'string' } },
                    scale: { type: 'integer' },
                  },
                },
              },
              locks: { type: 'object', additionalProperties: keyed },
              states: { type: 'object', additionalProperties: keyed },
            },
          },
        },
      },
    },
    async () => ({ accounts: ledger.cfg.accounts, locks: ledger.cfg.locks, states: ledger.cfg.states }),
  );
  app.post(
    '/v1/ledger/batches',
    {
      schema: {
        operationId: 'writeBatch',
        tags,
        summary: 'Write a batch of events (with lock checks and state updates)',
        body: batchSchema,
        response: answer({ batch_id: str, events: { type: 'integer' }, states: list }),
      },
    },
    async (req) => ledger.write(req.body as BatchRequest),
  );
  app.post(
    '/v1/ledger/balances',
    {
      schema: {
        operationId: 'getBalances',
        tags,
        summary: 'Balances at a date',
        body: obj(['dt', 'accounts'], { dt, accounts }),
        response: answer({ dt: str, balances: list }),
      },
    },
    async (req) => ledger.balances(req.body as { dt: string; accounts: AccountQuery[] }),
  );
  app.post(
    '/v1/ledger/turnovers',
    {
      schema: {
        operationId: 'getTurnovers',
        tags,
        summary: 'Turnovers for a period',
        body: obj(['dt_from', 'dt_to', 'accounts'], { dt_from: dt, dt_to: dt, accounts }),
        response: answer({ dt_from: str, dt_to: str, turnovers: list }),
      },
    },
    async (req) => ledger.turnovers(req.body as { dt_from: string; dt_to: string; accounts: AccountQuery[] }),
  );
  app.get<{ Querystring: { type: string; dt?: string; limit?: number; cursor?: string } }>(
    '/v1/ledger/accounts',
    {
      schema: {
        operationId: 'listLedgerAccounts',
        tags,
        summary: 'The accounts of a type that have events, by key, paged, each with its balance at dt (default now)',
        querystring: {
          type: 'object',
          additionalProperties: false,
          required: ['type'],
          properties: {
            type: name,
            dt,
            limit: { type: 'integer', minimum: 1, maximum: 500 },
            cursor: { type: 'string', maxLength: 2000 },
          },
        },
        response: answer({
          dt: str,
          items: { type: 'array', items: { type: 'object', properties: { key: attrsOut, debit: str, credit: str } } },
          next_cursor: { type: ['string', 'null'] },
        }),
      },
    },
    async (req) => ledger.accounts(req.query.type, req.query),
  );
  app.post(
    '/v1/ledger/events',
    {
      schema: {
        operationId: 'listLedgerEvents',
        tags,
        summary: 'Events for a period, ordered by (dt, shard, id), paged',
        body: obj(['dt_from', 'dt_to', 'accounts', 'limit'], {
          dt_from: dt,
          dt_to: dt,
          accounts,
          limit: { type: 'integer', minimum: 1, maximum: 10_000 },
          cursor: { type: 'string', maxLength: 200 },
        }),
        response: answer({ events: list, next_cursor: { type: ['string', 'null'] } }),
      },
    },
    async (req) =>
      ledger.events(
        req.body as { dt_from: string; dt_to: string; accounts: AccountQuery[]; limit: number; cursor?: string },
      ),
  );
  app.post(
    '/v1/ledger/locks/acquire',
    {
      schema: {
        operationId: 'acquireLock',
        tags,
        summary: 'Take or renew a lock',
        body: obj(['type', 'attrs', 'uid', 'mode', 'timeout_s'], {
          type: name,
          attrs,
          uid,
          mode: { type: 'string', enum: ['exclusive', 'shared'] },
          timeout_s: timeout,
        }),
        response: lockOut,
      },
    },
    async (req) =>
      ledger.acquireLock(
        req.body as { type: string; attrs: Record<string, string>; uid: string; mode: LockMode; timeout_s: number },
      ),
  );
  app.post(
    '/v1/ledger/locks/ping',
    {
      schema: {
        operationId: 'pingLock',
        tags,
        summary: 'Extend a held lock',
        body: obj(['type', 'attrs', 'uid', 'timeout_s'], { type: name, attrs, uid, timeout_s: timeout }),
        response: lockOut,
      },
    },
    async (req) =>
      ledger.pingLock(req.body as { type: string; attrs: Record<string, string>; uid: string; timeout_s: number }),
  );
  app.post(
    '/v1/ledger/locks/release',
    {
      schema: {
        operationId: 'releaseLock',
        tags,
        summary: 'Release a lock',
        body: obj(['type', 'attrs', 'uid'], { type: name, attrs, uid }),
        response: answer({ released: { type: 'boolean' } }),
      },
    },
    async (req) => ledger.releaseLock(req.body as { type: string; attrs: Record<string, string>; uid: string }),
  );
  app.post(
    '/v1/ledger/locks/get',
    {
      schema: {
        operationId: 'getLock',
        tags,
        summary: 'Current holders of a lock',
        body: obj(['type', 'attrs'], { type: name, attrs }),
        response: answer({ type: str, attrs: attrsOut, holders: list }),
      },
    },
    async (req) => ledger.getLock(req.body as { type: string; attrs: Record<string, string> }),
  );
  app.post(
    '/v1/ledger/states/get',
    {
      schema: {
        operationId: 'getState',
        tags,
        summary: 'A JSON state and its version',
        body: obj(['type', 'attrs'], { type: name, attrs }),
        response: answer({ type: str, attrs: attrsOut, state: {}, version: { type: 'integer' } }),
      },
    },
    async (req) => ledger.getState(req.body as { type: string; attrs: Record<string, string> }),
  );
}
