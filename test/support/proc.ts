import { spawn, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ConfigInput } from '../../src/core/config.js';

/** Repository root. */
export const ROOT = resolve(fileURLToPath(new URL('../..', import.meta.url)));

/** Node arguments that run a TypeScript file of this repository. */
export function tsNodeArgs(file: string, args: readonly string[] = []): string[] {
  return ['--import', 'tsx', join(ROOT, file), ...args];
}

/**
 * Spawns a TypeScript file of this repository as a child Node process. With
 * `group`, the child leads a process group of its own, so `signalGroup` can
 * freeze (SIGSTOP) or kill it with everything it started.
 */
export function spawnTs(
  file: string,
  args: readonly string[] = [],
  env: NodeJS.ProcessEnv = {},
  opts: { group?: boolean } = {},
): ChildProcess {
  return spawn(process.execPath, tsNodeArgs(file, args), {
    cwd: ROOT,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: opts.group === true,
  });
}

/** Sends `sig` to the process group led by `child` (spawned with `group`); a group already gone is not an error. */
export function signalGroup(child: ChildProcess, sig: NodeJS.Signals): void {
  try {
    process.kill(-child.pid!, sig);
  } catch {
    // ESRCH: the group has exited already, which is what SIGKILL wanted anyway.
  }
}

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Resolves when the child exits, with everything it wrote. */
export function collect(child: ChildProcess): Promise<RunResult> {
  let stdout = '';
  let stderr = '';
  child.stdout?.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr?.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  return new Promise((res, rej) => {
    child.on('error', rej);
    child.on('close', (code, signal) => res({ code, signal, stdout, stderr }));
  });
}

/** Runs the `millrace` command (from source) to completion. */
export function runCli(args: readonly string[]): Promise<RunResult> {
  return collect(spawnTs('test/support/cli.ts', args));
}

/** Writes a config file (JSON is YAML) and returns its path. */
export function writeConfigFile(
  dir: string,
  input: ConfigInput | Record<string, unknown>,
  name = 'millrace.yaml',
): string {
  const path = join(dir, name);
  writeFileSync(path, JSON.stringify(input, null, 2));
  return path;
}

/**
 * Spawns a TypeScript file of this repository and resolves once its stdout
 * matches `ready` (the first group of the match is `found`, e.g. a URL);
 * rejects if it exits first, with what it wrote to stderr.
 */
export async function spawnReady(
  file: string,
  args: readonly string[],
  ready: RegExp,
  opts: { group?: boolean } = {},
): Promise<{ child: ChildProcess; found: string }> {
  const child = spawnTs(file, args, {}, opts);
  const m = await waitForLine(child, ready, file);
  return { child, found: m[1] ?? m[0] };
}

/**
 * Resolves with the first match of `re` in what `child` writes to stdout from
 * now on; rejects if it exits first, with what it wrote to stderr.
 */
export function waitForLine(child: ChildProcess, re: RegExp, what = 'child'): Promise<RegExpExecArray> {
  let out = '';
  let err = '';
  child.stderr?.setEncoding('utf8').on('data', (d: string) => (err += d));
  return new Promise((resolve, reject) => {
    child.stdout?.setEncoding('utf8').on('data', (d: string) => {
      out += d;
      const m = re.exec(out);
      if (m) resolve(m);
    });
    child.once('exit', (code) => reject(new Error(`${what} exited with ${code}: ${err}`)));
  });
}
