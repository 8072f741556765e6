/**
 * Signed calls outward: a request millrace sends to a processor or a pipe
 * handler carries an ed25519 signature over its method, path, body digest and
 * time, so the receiver can tell it came from a node holding the signing key.
 * Pure (node:crypto only): the node signs with it and the SDK verifies with it.
 *
 *   x-millrace-signature: v1;t=<unix ms>;sig=<base64url ed25519 signature>
 *
 * The signed text is `millrace-v1\n<METHOD>\n<path with query>\n<sha256 hex of the body>\n<t>`.
 */
import { createHash, createPrivateKey, createPublicKey, KeyObject, sign, verify } from 'node:crypto';

export const SIGNATURE_HEADER = 'x-millrace-signature';

/** How far a signature's time may be from the receiver's clock (either way) by default, seconds. */
export const DEFAULT_MAX_SKEW_S = 60;

function signedText(method: string, path: string, body: string | Buffer, t: number): Buffer {
  const digest = createHash('sha256').update(body).digest('hex');
  return Buffer.from(`millrace-v1\n${method.toUpperCase()}\n${path}\n${digest}\n${t}`);
}

export interface RequestSigner {
  /** The header value for one request. */
  header(method: string, path: string, body: string | Buffer): string;
}

/** A signer over an ed25519 private key (PEM text or a KeyObject). Throws when the key is not ed25519. */
export function requestSigner(
  privateKey: string | Buffer | KeyObject,
  now: () => number = () => Date.now(),
): RequestSigner {
  const key = privateKey instanceof KeyObject ? privateKey : createPrivateKey(privateKey);
  if (key.type !== 'private' || key.asymmetricKeyType !== 'ed25519')
    throw new TypeError('the signing key must be an ed25519 private key');
  return {
    header(method, path, body) {
      const t = now();
      const sig = sign(null, signedText(method, path, body, t), key).toString('base64url');
      return `v1;t=${t};sig=${sig}`;
    },
  };
}

export type SignatureProblem = 'missing' | 'malformed' | 'stale' | 'forged';

export interface SignatureVerifier {
  /** Null when the header is a valid, fresh signature of this request by one of the keys; else why not. */
  check(header: string | undefined, method: string, path: string, body: string | Buffer): SignatureProblem | null;
}

/** A verifier trusting these ed25519 public keys (PEM text or KeyObjects: several while a key is rotated). */
export function signatureVerifier(
  publicKeys: ReadonlyArray<string | Buffer | KeyObject>,
  o: { maxSkewS?: number; now?: () => number } = {},
): SignatureVerifier {
  if (publicKeys.length === 0) throw new TypeError('signatureVerifier: give at least one public key');
  const keys = publicKeys.map((k) => {
    const key = k instanceof KeyObject ? k : createPublicKey(k);
    if (key.asymmetricKeyType !== 'ed25519') throw new TypeError('the public keys must be ed25519 keys');
    return key.type === 'private' ? createPublicKey(key) : key;
  });
  const skewMs = (o.maxSkewS ?? DEFAULT_MAX_SKEW_S) * 1000;
  const now = o.now ?? (() => Date.now());
  return {
    check(header, method, path, body) {
      if (header === undefined || header === '') return 'missing';
      const m = /^v1;t=(\d{1,16});sig=([A-Za-z0-9_-]{86})$/.exec(header.trim());
      if (m === null) return 'malformed';
      const t = Number(m[1]);
      if (Math.abs(now() - t) > skewMs) return 'stale';
      const sig = Buffer.from(m[2]!, 'base64url');
      const text = signedText(method, path, body, t);
      return keys.some((k) => verify(null, text, k, sig)) ? null : 'forged';
    },
  };
}
