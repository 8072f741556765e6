import { RuleTester } from 'eslint';
import tseslint from 'typescript-eslint';
import { describe, it } from 'vitest';
import { noSilentCatch } from '../../tools/lint/no-silent-catch.js';

// RuleTester builds its cases with the test framework's describe/it.
RuleTester.describe = describe;
RuleTester.it = it;
RuleTester.itOnly = it.only;

const tester = new RuleTester({
  languageOptions: { parser: tseslint.parser, ecmaVersion: 2023, sourceType: 'module' },
});
const silent = [{ messageId: 'silent' }];

tester.run('no-silent-catch', noSilentCatch, {
  valid: [
    // Handled: logged, rethrown, or turned into a value.
    "p.catch((err) => log.warn({ err }, 'failed'));",
    'p.catch((err) => { throw wrap(err); });',
    'p.catch(() => null);',
    'p.then(ok, (err) => report(err));',
    'p.then(ok);',
    // Silent, with the reason in a comment inside the handler, at the end of its line, or on the line before.
    'p.catch(() => { /* the socket is already gone */ });',
    'p.catch(() => {}); // the lease lapses by itself',
    'async function f() {\n  // The caller gets the error below.\n  await conn.exec("ROLLBACK").catch(() => {});\n}',
    // On the line before the statement of a chained call.
    '// Only a hint.\nvoid ask()\n  .catch(() => {})\n  .finally(done);',
    // One comment covers adjacent statements that each drop an error.
    'async function f() {\n  // Teardown: these may be gone already.\n  await a.close().catch(() => {});\n  await b.close().catch(() => {});\n  for (const c of cs) await c.end().catch(() => undefined);\n}',
    // Not a promise rejection handler.
    'emitter.on("error", () => {});',
    'list.map(() => {});',
  ],
  invalid: [
    { code: 'p.catch(() => {});', errors: silent },
    { code: 'p.catch(function () {});', errors: silent },
    { code: 'p.catch(() => undefined);', errors: silent },
    { code: 'p.catch(() => void 0);', errors: silent },
    { code: 'p.then(ok, () => {});', errors: silent },
    { code: 'async function f() {\n  await x.close().catch(() => {});\n}', errors: silent },
    // A comment two lines up, or a blank line in between, does not explain.
    { code: '// far away\n\np.catch(() => {});', errors: silent },
    // Only adjacent statements inherit the comment: a statement that handles nothing breaks the run.
    {
      code: 'async function f() {\n  // Teardown.\n  await a.close().catch(() => {});\n  const b = await open();\n  await b.close().catch(() => {});\n}',
      errors: silent,
    },
    // An unexplained statement does not pass anything on.
    {
      code: 'async function f() {\n  await a.close().catch(() => {});\n  await b.close().catch(() => {});\n}',
      errors: [...silent, ...silent],
    },
  ],
});
