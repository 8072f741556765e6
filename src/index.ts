/**
 * millrace: the server as a library — the runtime, the storage, the log and
 * its cursors, the scheduler, a node, and the machines face. Every name is
 * listed here (no `export *`). A service that only talks to millrace wants
 * `millrace/sdk` instead.
 */

// Errors.
export {
  allErrorCodes,
  badRequest,
  codeSpec,
  defineErrorCodes,
  ERROR_CODES,
  GrpcStatus,
  isErrorCode,
  isMillraceError,
  MillraceError,
  toMillraceError,
} from './core/errors.js';
export type { CodeInput, ErrorCode, ErrorCodeTable } from './core/errors.js';

// Configuration, clock, shard routing.
export { buildConfig, checkCoverage, configSchema, loadConfig } from './core/config.js';
export type { Config, ConfigInput, ParsedConfig, ShardConfig } from './core/config.js';
export { ManualClock, sleep, systemClock } from './core/clock.js';
export type { Clock } from './core/clock.js';
export { HASH_SPACE_END, parseHashBound, sha1, shardKeyText, ShardRouter } from './core/routing.js';
export type { RangeOwner } from './core/routing.js';

// Storage.
export type {
  DialectCapabilities,
  DialectName,
  HeldLock,
  Migration,
  Queryable,
  RoleLeaseSql,
  Row,
  ShardDriver,
  SqlFragments,
  Tx,
  WriteConnection,
} from './storage/port.js';
export { Shard, Storage } from './storage/storage.js';
export { CORE_MIGRATIONS } from './storage/migrations.js';

// The log, its chain and its cursors.
export { APPEND_CHANNEL, Log, POS_CHANNEL, ShardLog } from './log/log.js';
export type { AppendOptions, AppendResult, LogEvent, NewEvent, ReadRange } from './log/log.js';
export { Consumer, CursorEngine, exclusiveLockKey } from './log/cursor.js';
export type { ConsumerOptions, CursorStart, TailOptions } from './log/cursor.js';
export { canonicalBytes, chainHash, GENESIS_HASH, rowChainFields } from './log/chain.js';
export type { ChainFields, StoredEventRow } from './log/chain.js';
export { verifyShard } from './log/verify.js';
export type { VerifyResult } from './log/verify.js';

// Scheduler, runtime, node.
export { RetryTimer, Scheduler } from './scheduler/scheduler.js';
export type { SchedulerOptions, Timer, TimerContext, TimerHandler } from './scheduler/scheduler.js';
export { Runtime } from './runtime.js';
export type { NodeInfo, NodeSessions, RuntimeOptions } from './runtime.js';
export { serve, startNode } from './serve.js';
export type { Node, StartOptions } from './serve.js';
export { buildHttpServer } from './api/http/server.js';

// The machines face, its in-process processors and its wire types.
export { Machines, type MachineRef, type RequestOptions as MachineRequestOptions } from './machines/machines.js';
export { MachinesClient } from './machines/client.js';
export { ProcessorUnavailable, type ProcessorContext, type ProcessorFn } from './machines/processor.js';
export type {
  HistoryRange,
  MachineEvent,
  MachineView,
  ProcessorAction,
  ProcessorRequest,
  ProcessorResult,
  ResolvedHistoryRange,
  TimerSet,
} from './machines/wire.js';
export { machinesFace, machinesFaceWith, MachinesFace } from './machines/face.js';
export type { Face, FaceDefinition, FaceFactory, FaceSpec } from './face.js';
export { BUILT_IN_FACES } from './faces.js';
export { BUILT_IN_FACE_SPECS } from './face-specs.js';
