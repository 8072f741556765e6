import { fileURLToPath } from 'node:url';
import { loadPackageDefinition, type GrpcObject, type ServiceClientConstructor } from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';

/**
 * The one loader of millrace's .proto files, for the server, the clients,
 * tests and benchmarks. Only grpc-js and proto-loader are imported, so a
 * client can use it without loading the server.
 */

/** The folder holding `millrace/v1/*.proto`. */
export const PROTO_ROOT = fileURLToPath(new URL('../../../proto', import.meta.url));

export type MillraceService = 'Bus' | 'Pipe';

/**
 * Field names as written in the .proto (`snake`, what the server uses) or in
 * camelCase (`camel`, protobufjs's default, what the stock JS clients see).
 */
export type FieldCase = 'snake' | 'camel';

const FILES: Record<MillraceService, string> = { Bus: 'millrace/v1/bus.proto', Pipe: 'millrace/v1/pipe.proto' };
const cache = new Map<string, ServiceClientConstructor>();

/**
 * The `millrace.v1.<name>` service: a client constructor whose `.service` is
 * the definition a server registers. 64-bit integers are JS numbers, unset
 * fields have their defaults, and a oneof names its set field.
 */
export function millraceService(name: MillraceService, fieldCase: FieldCase = 'snake'): ServiceClientConstructor {
  const key = `${name}/${fieldCase}`;
  let ctor = cache.get(key);
  if (!ctor) {
    const def = loadSync(FILES[name], {
      includeDirs: [PROTO_ROOT],
      keepCase: fieldCase === 'snake',
      longs: Number,
      enums: String,
      defaults: true,
      oneofs: true,
    });
    const pkg = loadPackageDefinition(def) as unknown as { millrace: { v1: GrpcObject } };
    ctor = pkg.millrace.v1[name] as ServiceClientConstructor;
    cache.set(key, ctor);
  }
  return ctor;
}
