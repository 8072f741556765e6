/**
 * Type tests of the SDK: `npm run typecheck` checks them (tsc includes test/);
 * vitest runs them too, where `expectTypeOf` does nothing. A wrong type makes
 * the typecheck fail, and each `@ts-expect-error` fails it if the line it
 * guards stops being an error.
 */
import { describe, expectTypeOf, it } from 'vitest';
import type { Ledger } from '../../src/ledger/ledger.js';
import type {
  AccountQuery as ServerAccountQuery,
  BatchAnswer as ServerBatchAnswer,
  BatchRequest as ServerBatchRequest,
} from '../../src/ledger/ledger-types.js';
import type { HistoryRange as ConfigHistoryRange } from '../../src/machines/config.js';
import type { Machines } from '../../src/machines/machines.js';
import {
  defineProcessor,
  MachinesClient,
  type AccountQuery,
  type ArgsOf,
  type AuxOf,
  type BalancesAnswer,
  type BatchAnswer,
  type BatchRequest,
  type EventOf,
  type HistoryEvent,
  type LedgerEventsAnswer,
  type LedgerEventsQuery,
  type LockAcquire,
  type LockAnswer,
  type LockHolders,
  type LockMode,
  type Machine,
  type NamespaceClient,
  type Processor,
  type ProcessorTypes,
  type ResolvedHistoryRange,
  type ResponseOf,
  type StateAnswer,
  type SubscriptionInfo,
  type TurnoversAnswer,
  type TurnoversQuery,
  type TypesOf,
  type WireMachine,
} from '../../src/sdk/index.js';
import { orders, type Orders } from '../../examples/processor.js';

type Ev = { type: 'placed'; sku: string } | { type: 'paid'; amount: string };
type Aux = { paid: boolean };
type T = {
  event: Ev;
  aux: Aux;
  init: { args: { sku: string }; response: 'placed' };
  call: { args: { pay: string }; response: { paid: true } };
  notification: { args: { note: string } };
  repair: { args: { force: boolean }; response: number };
};

// Its methods are never called here: only their types are checked.
const client = new MachinesClient('http://127.0.0.1:1');

/** `T` with every snake_case key camelCase, deeply: the SDK's view of a wire type. */
type CamelCase<S extends string> = S extends `${infer H}_${infer R}` ? `${H}${Capitalize<CamelCase<R>>}` : S;
type Camel<T> =
  T extends Array<infer U>
    ? Array<Camel<U>>
    : T extends object
      ? { [K in keyof T as K extends string ? CamelCase<K> : K]: Camel<T[K]> }
      : T;

describe('defineProcessor: each step its own types', () => {
  it('gives each callback its own args, and the events and aux to every context', () => {
    const p = defineProcessor<T>({
      init(args, ctx) {
        expectTypeOf(args).toEqualTypeOf<{ sku: string }>();
        expectTypeOf(ctx.machine).toEqualTypeOf<Machine<Ev, Aux>>();
        expectTypeOf(ctx.machine.aux).toEqualTypeOf<Aux | null>();
        expectTypeOf(ctx.machine.history).toEqualTypeOf<Array<HistoryEvent<Ev>>>();
        return { events: [{ type: 'placed', sku: args.sku }], aux: { paid: false }, response: 'placed' };
      },
      call(args) {
        expectTypeOf(args).toEqualTypeOf<{ pay: string }>();
        return { events: [{ type: 'paid', amount: args.pay }], response: { paid: true } };
      },
      notification(args) {
        expectTypeOf(args).toEqualTypeOf<{ note: string }>();
      },
      repair(args) {
        expectTypeOf(args).toEqualTypeOf<{ force: boolean }>();
        return { response: 1 };
      },
      timeout(ctx) {
        expectTypeOf(ctx.machine.aux).toEqualTypeOf<Aux | null>();
      },
    });
    expectTypeOf(p).toEqualTypeOf<Processor<T>>();
    expectTypeOf<TypesOf<typeof p>>().toEqualTypeOf<T>();
  });

  it('refuses a response, an event or an aux state of the wrong type', () => {
    defineProcessor<T>({
      // @ts-expect-error init answers 'placed', not a number
      init: () => ({ response: 1 }),
      // @ts-expect-error an event that is not an Ev
      call: () => ({ events: [{ type: 'shipped' }], response: { paid: true } }),
      // @ts-expect-error the aux state is {paid: boolean}
      notification: () => ({ aux: { paid: 'yes' } }),
    });
    // @ts-expect-error a notification answers nothing to a caller
    defineProcessor<T>({ notification: () => ({ response: 'x' }) });
  });

  it('takes the types as an interface too', () => {
    interface Counter extends ProcessorTypes {
      event: { n: number };
      aux: { count: number };
      call: { args: { by: number }; response: number };
    }
    defineProcessor<Counter>({
      call(args, ctx) {
        expectTypeOf(args).toEqualTypeOf<{ by: number }>();
        const count = (ctx.machine.aux?.count ?? 0) + args.by;
        return { events: [{ n: args.by }], aux: { count }, response: count };
      },
    });
    expectTypeOf<ResponseOf<Counter, 'call'>>().toEqualTypeOf<number>();
  });

  it('leaves what a definition does not say as unknown', () => {
    type Some = { call: { response: string } };
    expectTypeOf<ArgsOf<Some, 'call'>>().toBeUnknown();
    expectTypeOf<ResponseOf<Some, 'call'>>().toEqualTypeOf<string>();
    expectTypeOf<ResponseOf<Some, 'init'>>().toBeUnknown();
    expectTypeOf<EventOf<Some>>().toBeUnknown();
    expectTypeOf<AuxOf<Some>>().toBeUnknown();
    defineProcessor<Some>({
      init(args, ctx) {
        expectTypeOf(args).toBeUnknown();
        expectTypeOf(ctx.machine.aux).toEqualTypeOf<unknown>();
      },
    });
  });
});

describe('client.for(definition): a client typed by the definition', () => {
  it('types the args and responses of start, call, notify, repair and the view of get', () => {
    const m = client.for(defineProcessor<T>({ namespace: 'orders' }));
    expectTypeOf(m).toEqualTypeOf<NamespaceClient<T>>();
    // eslint-disable-next-line @typescript-eslint/unbound-method -- only its type is read; it is never called unbound
    expectTypeOf(m.start).parameter(1).toEqualTypeOf<{ sku: string }>();
    expectTypeOf(() => m.start('o-1', { sku: 'book' })).returns.resolves.toEqualTypeOf<{ response: 'placed' }>();
    expectTypeOf(() => m.call({ id: 'o-1' }, { pay: '1' })).returns.resolves.toEqualTypeOf<{
      response: { paid: true };
    }>();
    expectTypeOf(() => m.notify({ tag: 't' }, { note: 'n' })).returns.resolves.toEqualTypeOf<{ id: number }>();
    expectTypeOf(() => m.repair({ id: 'o-1' }, { force: true })).returns.resolves.toEqualTypeOf<{ response: number }>();
    expectTypeOf(() => m.get({ id: 'o-1' })).returns.resolves.toEqualTypeOf<Machine<Ev, Aux>>();
  });

  it('refuses args of the wrong type and leaves out none that are required', () => {
    const m = client.for(defineProcessor<T>({ namespace: 'orders' }));
    // Never called: only its types are checked.
    const calls = (): unknown[] => [
      // @ts-expect-error start takes {sku}
      m.start('o-1', { pay: '1' }),
      // @ts-expect-error the start args are required
      m.start('o-1'),
      // @ts-expect-error call takes {pay: string}
      m.call({ id: 'o-1' }, { pay: 1 }),
      // @ts-expect-error a ref is {id} or {tag}
      m.get('o-1'),
    ];
    expectTypeOf(calls).toBeFunction();
  });

  it('makes args optional where the definition does not type them', () => {
    const m = client.for(defineProcessor({ namespace: 'free' }));
    expectTypeOf(() => m.start('x')).returns.resolves.toEqualTypeOf<{ response: unknown }>();
    expectTypeOf(() => m.get({ id: 'x' })).returns.resolves.toEqualTypeOf<Machine<unknown, unknown>>();
    const opt = client.for<{ init: { args: { n: number } | undefined } }>('ns');
    expectTypeOf(() => opt.start('x')).returns.resolves.toEqualTypeOf<{ response: unknown }>();
  });

  it('takes the types without the definition: for<Types>(namespace)', () => {
    expectTypeOf(client.for<Orders>('orders')).toEqualTypeOf<NamespaceClient<Orders>>();
    expectTypeOf(client.for(orders)).toEqualTypeOf<NamespaceClient<Orders>>();
    expectTypeOf<TypesOf<typeof orders>>().toEqualTypeOf<Orders>();
  });

  it('the untyped client answers the same camelCase view', () => {
    expectTypeOf(() => client.get('ns', { id: 'a' })).returns.resolves.toEqualTypeOf<Machine<unknown, unknown>>();
    expectTypeOf<Machine<unknown, unknown>>().toHaveProperty('historyRange').toEqualTypeOf<ResolvedHistoryRange>();
    expectTypeOf<Machine<unknown, unknown>>().not.toHaveProperty('aux_state');
  });
});

describe('the types of public signatures are exported and match the server', () => {
  it('ledger: the server’s bodies and answers, camelCase', () => {
    expectTypeOf<BalancesAnswer>().toEqualTypeOf<Camel<Awaited<ReturnType<Ledger['balances']>>>>();
    expectTypeOf<TurnoversAnswer>().toEqualTypeOf<Camel<Awaited<ReturnType<Ledger['turnovers']>>>>();
    expectTypeOf<LedgerEventsAnswer>().toEqualTypeOf<Camel<Awaited<ReturnType<Ledger['events']>>>>();
    expectTypeOf<LockAnswer>().toEqualTypeOf<Camel<Awaited<ReturnType<Ledger['acquireLock']>>>>();
    expectTypeOf<LockAnswer>().toEqualTypeOf<Camel<Awaited<ReturnType<Ledger['pingLock']>>>>();
    expectTypeOf<LockHolders>().toEqualTypeOf<Camel<Awaited<ReturnType<Ledger['getLock']>>>>();
    expectTypeOf<StateAnswer>().toEqualTypeOf<Camel<Awaited<ReturnType<Ledger['getState']>>>>();
    expectTypeOf<BatchRequest>().toEqualTypeOf<Camel<ServerBatchRequest>>();
    expectTypeOf<BatchAnswer>().toEqualTypeOf<Camel<ServerBatchAnswer>>();
    expectTypeOf<AccountQuery>().toEqualTypeOf<Camel<ServerAccountQuery>>();
    expectTypeOf<LockAcquire>().toEqualTypeOf<Camel<Parameters<Ledger['acquireLock']>[0]>>();
    expectTypeOf<LedgerEventsQuery>().toEqualTypeOf<Camel<Parameters<Ledger['events']>[0]>>();
    expectTypeOf<TurnoversQuery>().toEqualTypeOf<Camel<Parameters<Ledger['turnovers']>[0]>>();
    expectTypeOf<LockMode>().toEqualTypeOf<'exclusive' | 'shared'>();
  });

  it('bus and machines', () => {
    expectTypeOf<SubscriptionInfo>().toHaveProperty('name').toEqualTypeOf<string>();
    expectTypeOf<WireMachine>().toEqualTypeOf<Awaited<ReturnType<Machines['get']>>>();
    expectTypeOf<ResolvedHistoryRange>().toEqualTypeOf<ConfigHistoryRange>();
  });
});
