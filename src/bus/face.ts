import type { Face, FaceFactory } from '../face.js';
import { registerBusService } from '../api/grpc/bus-service.js';
import { registerBusRoutes } from '../api/http/bus-routes.js';
import { Bus } from './bus.js';

/** The bus face: publish, durable subscriptions, RabbitMQ ingress and exporters. */
export const busFace: FaceFactory = (rt) => {
  const bus = new Bus(rt);
  const face: Face & { bus: Bus } = {
    name: 'bus',
    bus,
    start: () => bus.start(),
    stop: () => bus.stop(),
    http: (app) => registerBusRoutes(app, bus),
    grpc: (server) => registerBusService(server, bus),
  };
  return face;
};
