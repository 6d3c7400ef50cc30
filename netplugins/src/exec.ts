/** Runs a host command (ip, vppctl, ovs-vsctl, nsenter): the one place the OS ports shell out. */
import { spawn } from 'node:child_process';
import { AppError } from '@edgenfv/contracts';

export class ExecError extends AppError {
  constructor(
    readonly argv: readonly string[],
    readonly exitCode: number | null,
    readonly stderr: string,
  ) {
    super('INTERNAL', `${argv.join(' ')} failed (exit ${exitCode}): ${stderr.trim().split('\n').slice(-3).join(' | ')}`, {
      details: { argv, exitCode, stderr },
    });
  }
}

export interface ExecResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** A command runner port: tests of renderers (VPP, OVS) pass a recorder. */
export type Runner = (argv: readonly string[], input?: string) => Promise<ExecResult>;

export const runProcess: Runner = (argv, input) =>
  new Promise((resolve, reject) => {
    const child = spawn(argv[0]!, argv.slice(1), { stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    child.on('error', reject);
    child.on('close', (code) =>
      resolve({ code, stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8') }),
    );
    child.stdin.on('error', () => undefined);
    child.stdin.end(input ?? '');
  });

export async function mustRun(run: Runner, argv: readonly string[], input?: string): Promise<string> {
  const r = await run(argv, input);
  if (r.code !== 0) throw new ExecError(argv, r.code, r.stderr || r.stdout);
  return r.stdout;
}
