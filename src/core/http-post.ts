import http from 'node:http';
import https from 'node:https';
import { SIGNATURE_HEADER, type RequestSigner } from './request-signing.js';

export interface PostResult {
  status: number;
  text: string;
}

/** Raised when no answer came within the timeout; `timedOut` tells it from a refused or broken connection. */
export class PostError extends Error {
  constructor(
    message: string,
    readonly timedOut: boolean,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

export type JsonPost = (body: string, headers: Record<string, string>, timeoutMs: number) => Promise<PostResult>;

/**
 * A POST of a JSON body to one URL over node:http(s) with a keep-alive agent:
 * several times cheaper per call than fetch on loopback. One plain timer per
 * request, cleared when it settles. With a signer, each request carries its
 * signature (core/request-signing.ts).
 */
export function jsonPost(url: string, signer: RequestSigner | null = null): JsonPost {
  const target = new URL(url);
  const path = `${target.pathname}${target.search}`;
  const secure = target.protocol === 'https:';
  const agent = secure
    ? new https.Agent({ keepAlive: true, maxSockets: 512 })
    : new http.Agent({ keepAlive: true, maxSockets: 512 });
  const send = secure ? https.request : http.request;
  return (body, headers, timeoutMs) =>
    new Promise<PostResult>((resolve, reject) => {
      let timedOut = false;
      const fail = (err: unknown): void => {
        clearTimeout(timer);
        reject(new PostError(describe(err), timedOut, { cause: err }));
      };
      const r = send(
        target,
        {
          method: 'POST',
          agent,
          headers: {
            'content-type': 'application/json',
            'content-length': Buffer.byteLength(body),
            ...headers,
            ...(signer === null ? {} : { [SIGNATURE_HEADER]: signer.header('POST', path, body) }),
          },
        },
        (res) => {
          let t = '';
          res.setEncoding('utf8');
          res.on('data', (d: string) => (t += d));
          res.on('end', () => {
            clearTimeout(timer);
            resolve({ status: res.statusCode ?? 0, text: t });
          });
          res.on('error', fail);
        },
      );
      const timer = setTimeout(() => {
        timedOut = true;
        r.destroy(new Error(`no answer within ${timeoutMs} ms`));
      }, timeoutMs);
      r.on('error', fail);
      r.end(body);
    });
}

function describe(err: unknown): string {
  const e = err as Error & { code?: string; cause?: { code?: string; message?: string } };
  return e?.code ?? e?.cause?.code ?? e?.cause?.message ?? e?.message ?? String(err);
}
