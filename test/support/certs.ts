import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/** PEM files of a test certificate authority and certificates it signs, made with the openssl CLI at test time. */
export interface TestCa {
  dir: string;
  caCert: string;
  caKey: string;
  /** Signs a certificate for `subject` ("/CN=x/O=y"); `san` for a server ("IP:127.0.0.1,DNS:localhost"). */
  issue(name: string, subject: string, san?: string): { cert: string; key: string };
}

const openssl = (args: string[]) => execFileSync('openssl', args, { stdio: ['ignore', 'ignore', 'pipe'] });

export function makeCa(dir: string, name = 'ca', cn = 'millrace test CA'): TestCa {
  const caKey = join(dir, `${name}.key`);
  const caCert = join(dir, `${name}.pem`);
  openssl([
    'req',
    '-x509',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:prime256v1',
    '-nodes',
    '-keyout',
    caKey,
    '-out',
    caCert,
    '-days',
    '2',
    '-subj',
    `/CN=${cn}`,
  ]);
  let serial = 1;
  return {
    dir,
    caCert,
    caKey,
    issue(n, subject, san) {
      const key = join(dir, `${n}.key`);
      const csr = join(dir, `${n}.csr`);
      const cert = join(dir, `${n}.pem`);
      const ext = join(dir, `${n}.ext`);
      openssl([
        'req',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:prime256v1',
        '-nodes',
        '-keyout',
        key,
        '-out',
        csr,
        '-subj',
        subject,
      ]);
      writeFileSync(
        ext,
        san ? `subjectAltName=${san}\nextendedKeyUsage=serverAuth,clientAuth\n` : 'extendedKeyUsage=clientAuth\n',
      );
      openssl([
        'x509',
        '-req',
        '-in',
        csr,
        '-CA',
        caCert,
        '-CAkey',
        caKey,
        '-set_serial',
        String(serial++ + Math.floor(Math.random() * 1e6)),
        '-days',
        '2',
        '-out',
        cert,
        '-extfile',
        ext,
      ]);
      return { cert, key };
    },
  };
}

export const pem = (f: string): Buffer => readFileSync(f);
