// @ts-check
/**
 * Lint gate (`npm run lint`, part of `npm run verify`). Formatting is Prettier's
 * job (`npm run format:check`); this config holds only rules about meaning.
 */
import js from '@eslint/js';
import { createTypeScriptImportResolver } from 'eslint-import-resolver-typescript';
import importX from 'eslint-plugin-import-x';
import globals from 'globals';
import tseslint from 'typescript-eslint';
import millrace from './tools/lint/no-silent-catch.js';

export default tseslint.config(
  {
    ignores: ['dist/', 'node_modules/', 'data/', '.bench-tmp/', 'test-output/', 'examples/openapi-client/api.d.ts'],
  },
  js.configs.recommended,
  tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      ecmaVersion: 2023,
      sourceType: 'module',
      globals: { ...globals.node },
      parserOptions: {
        // src, test, bench and examples use tsconfig.json, ui/src uses ui/tsconfig.json.
        projectService: { allowDefaultProject: ['vitest.config.ts', 'ui/vite.config.ts'] },
        tsconfigRootDir: import.meta.dirname,
      },
    },
    linterOptions: { reportUnusedDisableDirectives: 'error' },
    plugins: { 'import-x': importX, millrace },
    settings: {
      'import-x/extensions': ['.ts', '.tsx', '.js'],
      'import-x/parsers': { '@typescript-eslint/parser': ['.ts', '.tsx'] },
      'import-x/resolver-next': [
        createTypeScriptImportResolver({ project: ['tsconfig.json', 'ui/tsconfig.json'], noWarnOnMultipleProjects: true }),
      ],
    },
    rules: {
      // Type-only imports say so (`import type`, or `import { type X }` beside values).
      '@typescript-eslint/consistent-type-imports': [
        'error',
        { prefer: 'type-imports', fixStyle: 'inline-type-imports' },
      ],
      '@typescript-eslint/no-import-type-side-effects': 'error',
      // A promise is awaited, returned, handled, or marked `void` on purpose.
      '@typescript-eslint/no-floating-promises': 'error',
      // No import circles between modules.
      'import-x/no-cycle': ['error', { ignoreExternal: true }],
      // A rejection handler that does nothing says why (tools/lint/no-silent-catch.js);
      // an empty catch block says why too (core `no-empty` accepts a comment in the block).
      'millrace/no-silent-catch': 'error',
      'no-empty': ['error', { allowEmptyCatch: false }],
      '@typescript-eslint/no-unused-vars': [
        'error',
        { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrors: 'none', ignoreRestSiblings: true },
      ],
      // Face error tables extend ErrorCodeRegistry by module augmentation with a single `extends`;
      // the registry itself is empty on purpose (see src/core/errors.ts).
      '@typescript-eslint/no-empty-object-type': ['error', { allowInterfaces: 'with-single-extends' }],
    },
  },
  {
    // The console: API data is typed, never `any`.
    files: ['ui/**/*.ts', 'ui/**/*.tsx'],
    languageOptions: { globals: { ...globals.browser } },
  },
  {
    // Plain JavaScript and files outside both tsconfigs: lint without type information.
    files: ['**/*.js', 'examples/openapi-client/**'],
    extends: [tseslint.configs.disableTypeChecked],
  },
);
