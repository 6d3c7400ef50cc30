import { execFile } from 'node:child_process';
import { InternalError } from '@edgenfv/contracts/internal/errors';

export interface CommandResult {
  stdout: string;
  stderr: string;
}

/** A command that exited non-zero: keeps argv, exit code and stderr for the caller to inspect. */
export class CommandError extends InternalError {
  readonly argv: readonly string[];
  readonly exitCode: number | null;
  readonly stderr: string;
  constructor(argv: readonly string[], exitCode: number | null, stderr: string, cause?: unknown) {
    super(`${argv.join(' ')}: ${stderr.trim() || `exit ${exitCode}`}`, { cause });
    this.argv = argv;
    this.exitCode = exitCode;
    this.stderr = stderr;
  }
}

/** Port for running a program; tests may wrap it (e.g. to record calls). */
export type Runner = (argv: readonly string[], opts?: { timeoutMs?: number; input?: string | Buffer }) => Promise<CommandResult>;

export const runCommand: Runner = (argv, opts = {}) =>
  new Promise((resolve, reject) => {
    const child = execFile(
      argv[0]!,
      argv.slice(1),
      { timeout: opts.timeoutMs ?? 30_000, maxBuffer: 16 * 1024 * 1024, encoding: 'utf8' },
      (err, stdout, stderr) => {
        if (err) {
          const code = typeof (err as { code?: unknown }).code === 'number' ? ((err as { code: number }).code) : null;
          reject(new CommandError(argv, code, stderr || err.message, err));
        } else resolve({ stdout, stderr });
      },
    );
    if (opts.input !== undefined) child.stdin?.end(opts.input);
  });

/** A runner that logs each command's wall time at debug level (where a guest call's time goes under TCG). */
export function timedRunner(log: { debug(obj: object, msg?: string): void }, run: Runner = runCommand): Runner {
  return async (argv, opts) => {
    const t0 = performance.now();
    try {
      return await run(argv, opts);
    } finally {
      log.debug({ cmd: argv.slice(0, 4).join(' '), ms: Math.round(performance.now() - t0) }, 'command done');
    }
  };
}

/**
 * A runner whose commands get `timeoutMs` unless the caller gives its own (the agent's `--command-timeout-ms`,
 * default 30 s: a nested TCG guest under load needs minutes for one `ip`).
 */
export function withDefaultTimeout(run: Runner, timeoutMs: number): Runner {
  return (argv, opts = {}) => run(argv, { ...opts, timeoutMs: opts.timeoutMs ?? timeoutMs });
}
