/**
 * `edgenfv` entry point: runs the command tree and turns every failure into a clear message on stderr and an
 * exit code per error class (exit-codes.ts). Returns the exit code (bin/edgenfv.js sets process.exitCode).
 */
import { readFileSync } from 'node:fs';
import { CommanderError } from 'commander';
import { asAppError } from '@edgenfv/contracts';
import { buildProgram, type CliIo } from './program.js';
import { EXIT_OK, EXIT_USAGE, exitCodeOf } from './exit-codes.js';
import { detailLines } from './format.js';

export function processIo(): CliIo {
  return {
    stdout: process.stdout,
    stderr: process.stderr,
    env: process.env,
    cwd: process.cwd(),
    readStdin: () => readFileSync(0, 'utf8'),
    onInterrupt: (fn) => {
      process.once('SIGINT', fn);
      process.once('SIGTERM', fn);
      return () => {
        process.off('SIGINT', fn);
        process.off('SIGTERM', fn);
      };
    },
  };
}

export async function main(argv: string[], io: CliIo = processIo()): Promise<number> {
  const program = buildProgram(io);
  try {
    await program.parseAsync(argv);
    return EXIT_OK;
  } catch (err) {
    if (err instanceof CommanderError) {
      // help and version are "errors" that exit 0; commander already printed its message
      return err.exitCode === 0 ? EXIT_OK : EXIT_USAGE;
    }
    const e = asAppError(err);
    if (program.opts<{ output?: string }>().output === 'json') {
      io.stderr.write(JSON.stringify({ ok: false, error: e.toBody() }) + '\n');
    } else {
      const issues = (e.details as { issues?: unknown[] } | undefined)?.issues;
      // with field issues, the lines below say it all; otherwise the message, then any details
      io.stderr.write(Array.isArray(issues) && issues.length > 0 ? `error: ${e.code}:\n` : `error: ${e.code}: ${e.message}\n`);
      if (e.details !== undefined) for (const l of detailLines(e.details)) io.stderr.write(`  ${l}\n`);
      if (e.code === 'INTERNAL' && e.cause instanceof Error && e.cause.stack && io.env.EDGENFV_DEBUG) io.stderr.write(`${e.cause.stack}\n`);
    }
    return exitCodeOf(e.code);
  }
}
