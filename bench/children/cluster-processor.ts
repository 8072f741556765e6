/**
 * The HTTP processor of bench/cluster.ts, in a process of its own: answers
 * every call with one event, everything else with nothing. Prints
 * {"url": "..."} once listening; exits when stdin closes.
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';

const server = createServer((req, res) => {
  let body = '';
  req.setEncoding('utf8');
  req.on('data', (d: string) => (body += d));
  req.on('end', () => {
    const kind = (JSON.parse(body) as { kind: string }).kind;
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(kind === 'call' ? '{"response":"ok","events":[{"n":1}]}' : '{}');
  });
});
server.keepAliveTimeout = 60_000;
server.listen(0, '127.0.0.1', () => {
  process.stdout.write(
    `@@ ${JSON.stringify({ url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/` })}\n`,
  );
});
process.stdin.resume();
process.stdin.on('end', () => process.exit(0));
