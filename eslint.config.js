// ESLint (flat config): type-aware typescript-eslint on every workspace's TypeScript, plain rules on the few
// JavaScript files. Runs after the build (`npm run lint`, part of `npm test`): the type information of a
// workspace's imports comes from the other workspaces' dist/*.d.ts. README "Tests" says what is in force and why.
import js from '@eslint/js';
import { defineConfig } from 'eslint/config';
import globals from 'globals';
import tseslint from 'typescript-eslint';

export default defineConfig(
  {
    ignores: ['**/dist/**', '**/node_modules/**', '**/.cache/**', '**/.edgenfv/**', 'netplugins/bin/**', 'tmp/**', 'test-output/**'],
  },
  {
    linterOptions: { reportUnusedDisableDirectives: 'error' },
  },
  {
    files: ['**/*.ts'],
    extends: [js.configs.recommended, tseslint.configs.recommendedTypeChecked],
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      '@typescript-eslint/switch-exhaustiveness-check': [
        'error',
        { considerDefaultExhaustiveForUnions: true, requireDefaultForNonUnion: false },
      ],
      '@typescript-eslint/no-floating-promises': [
        'error',
        {
          // node:test's describe/it/test return promises the runner itself awaits and reports.
          allowForKnownSafeCalls: [
            { from: 'package', package: 'node:test', name: ['describe', 'it', 'test', 'suite', 'before', 'after', 'beforeEach', 'afterEach'] },
          ],
        },
      ],
      '@typescript-eslint/no-misused-promises': 'error',
      // `_name` marks a parameter an interface requires or a field dropped from a copy ({ a: _a, ...rest }).
      '@typescript-eslint/no-unused-vars': [
        'error',
        { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrorsIgnorePattern: '^_', ignoreRestSiblings: true },
      ],
      // An async method without await is how this code implements a Promise-returning interface (fakes, guards,
      // no-op stops): a throw inside becomes a rejection, as callers expect. The rule found nothing real here.
      '@typescript-eslint/require-await': 'off',
      // A `!` or `as` the compiler does not need is noise, not a defect; this code base writes `xs[i]!` out of habit
      // (as under noUncheckedIndexedAccess). Removing ~350 of them found nothing real and touched every workspace.
      '@typescript-eslint/no-unnecessary-type-assertion': 'off',
      // Tests match CLI tables with their literal spacing (/^FAIL  sriov/): clearer than / {2}/.
      'no-regex-spaces': 'off',
      // `let x!: T` assigned once after the closures that read it are built (late initialisation) stays a let.
      'prefer-const': ['error', { ignoreReadBeforeAssign: true }],
      // A caught `unknown` passed on as it came is fine; a value known not to be an Error is not.
      '@typescript-eslint/prefer-promise-reject-errors': ['error', { allowThrowingUnknown: true }],
    },
  },
  {
    // Tests read untyped JSON (replies, files, KV entries) and poke at it: the no-unsafe-* family and no-explicit-any
    // flag every such read and found nothing real there (an unexpected shape fails the assertion anyway).
    // Source files keep them all.
    files: ['**/test/**/*.ts', 'test/src/**/*.ts'],
    rules: {
      '@typescript-eslint/no-unsafe-member-access': 'off',
      '@typescript-eslint/no-unsafe-assignment': 'off',
      '@typescript-eslint/no-unsafe-argument': 'off',
      '@typescript-eslint/no-unsafe-call': 'off',
      '@typescript-eslint/no-unsafe-return': 'off',
      '@typescript-eslint/no-explicit-any': 'off',
    },
  },
  {
    files: ['**/*.{js,mjs}'],
    extends: [js.configs.recommended],
    languageOptions: { globals: { ...globals.node } },
  },
  {
    files: ['services/dashboard/public/**/*.js'],
    languageOptions: { sourceType: 'script', globals: { ...globals.browser } },
  },
);
