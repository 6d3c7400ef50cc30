/**
 * `edgenfv check [--config FILE] [--json]`: is this host ready to be an edge node (like kata-check)? Runs the
 * checks of @edgenfv/host-check (the same ones the node agent runs at start and publishes in `nodes.get`) against
 * what the node agent's config promises (`--config`, else $EDGENFV_NODE_CONFIG, else the appliance's
 * `$EDGENFV_HOME/run/node-agent.json`, else the defaults: TCG allowed, no SR-IOV, no DPDK). Local: no appliance
 * is contacted. Prints each check with pass/warn/fail and what to do; `--json` prints
 * `{"ok", "checks": [{"name", "status", "detail", "fix", "required"}]}`. Exit 0 only when no required check failed.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { Command } from 'commander';
import { parse as parseYaml } from 'yaml';
import { AppError, InvalidArgumentError } from '@edgenfv/contracts';
import { edgenfvHome } from '@edgenfv/api-client';
import { promisesFromNodeConfig, runHostChecks, type HostCheckReport } from '@edgenfv/host-check';
import type { CliIo } from './program.js';

const MARK = { pass: 'PASS', warn: 'WARN', fail: 'FAIL' } as const;

export function formatReport(r: HostCheckReport, configSource: string): string {
  const width = Math.max(...r.checks.map((c) => c.name.length));
  const lines = [`edgenfv check (config: ${configSource})`];
  for (const c of r.checks) {
    lines.push(`${MARK[c.status]}  ${c.name.padEnd(width)}  ${c.detail}${c.required || c.status === 'pass' ? '' : '  (not needed by this config)'}`);
    if (c.fix) lines.push(`      ${' '.repeat(width)}  fix: ${c.fix}`);
  }
  const failed = r.checks.filter((c) => c.required && c.status === 'fail');
  lines.push(r.ok ? 'ready: this node can run what its config promises' : `not ready: ${failed.map((c) => c.name).join(', ')} failed`);
  return lines.join('\n') + '\n';
}

function loadConfig(io: CliIo, flag: string | undefined): { raw: unknown; source: string } {
  const candidate = flag ?? io.env.EDGENFV_NODE_CONFIG ?? join(edgenfvHome(io.env, io.cwd), 'run', 'node-agent.json');
  const path = resolve(io.cwd, candidate);
  if (!existsSync(path)) {
    if (flag !== undefined) throw new InvalidArgumentError([{ field: '--config', message: `${path} does not exist` }]);
    return { raw: {}, source: 'defaults (no node agent config found)' };
  }
  try {
    return { raw: parseYaml(readFileSync(path, 'utf8')), source: path };
  } catch (err) {
    throw new InvalidArgumentError([{ field: '--config', message: `${path} is not JSON/YAML: ${(err as Error).message}` }]);
  }
}

export function addCheckCommand(program: Command, io: CliIo): void {
  program
    .command('check')
    .description('check that this host can run what its node agent config promises (KVM, IOMMU, VFIO, hugepages, SR-IOV, OVS-DPDK, cgroup v2, QEMU, packages, time sync)')
    .option('--config <file>', 'node agent config (JSON/YAML); default $EDGENFV_NODE_CONFIG or $EDGENFV_HOME/run/node-agent.json')
    .option('--json', 'print {"ok", "checks": [...]} as JSON')
    .action(async (o: { config?: string; json?: boolean }, cmd: Command) => {
      const { raw, source } = loadConfig(io, o.config);
      const report = await runHostChecks({ promises: promisesFromNodeConfig(raw) });
      const json = o.json || cmd.optsWithGlobals<{ output?: string }>().output === 'json';
      io.stdout.write(json ? JSON.stringify(report) + '\n' : formatReport(report, source));
      if (!report.ok) {
        const failed = report.checks.filter((c) => c.required && c.status === 'fail').map((c) => c.name);
        throw new AppError('UNAVAILABLE', `this node cannot run what its config promises: ${failed.join(', ')} failed`);
      }
    });
}
