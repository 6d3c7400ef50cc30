/**
 * `edgenfv dpdk-config render --node FILE --workload FILE --format eal|testpmd|vpp|ovs|hugepages`: places a
 * workload on a node with @edgenfv/dpdk-config and prints what the chosen data plane needs. Local: no appliance
 * is contacted. Files are JSON or YAML; every issue names its field (`node.…`, `workload.…`) and nothing is printed
 * on stdout then. `--no-huge` / `--no-pci` turn a plan into one that runs on any machine (ordinary memory; PCI
 * NICs replaced by `net_null` ports in eal/testpmd), as the example test does.
 */
import { readFileSync } from 'node:fs';
import { Command, Option } from 'commander';
import { parse as parseYaml } from 'yaml';
import { InvalidArgumentError } from '@edgenfv/contracts';
import {
  ovsAddBridgeArgs,
  ovsAddDpdkPortArgs,
  ovsAddVhostUserClientPortArgs,
  ovsSetOtherConfigArgs,
  placeWorkload,
  renderEalArgs,
  renderHugepages,
  renderTestpmdArgs,
  renderVppStartupConf,
  type WorkloadSpec,
} from '@edgenfv/dpdk-config';
import type { CliIo } from './program.js';

export const RENDER_FORMATS = ['eal', 'testpmd', 'vpp', 'ovs', 'hugepages'] as const;
export type RenderFormat = (typeof RENDER_FORMATS)[number];

interface RenderOpts {
  node: string;
  workload: string;
  format: RenderFormat;
  huge: boolean; // false with --no-huge
  pci: boolean; // false with --no-pci
  lcores: 'identity' | 'remap';
}

function readDoc(path: string, field: string): unknown {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new InvalidArgumentError([{ field, message: `cannot read ${path}: ${(err as Error).message}` }]);
  }
  try {
    return parseYaml(text);
  } catch (err) {
    throw new InvalidArgumentError([{ field, message: `${path} is not JSON/YAML: ${(err as Error).message}` }]);
  }
}

const quote = (s: string): string => (/^[A-Za-z0-9_.,:=/@%+-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`);
const shellLine = (argv: string[]): string => argv.map(quote).join(' ') + '\n';

/** The rendered output: text for people and scripts, or the structured value under `-o json`. */
export function renderDpdkConfig(o: RenderOpts): { text: string; json: unknown; warnings: readonly string[] } {
  const node = readDoc(o.node, '--node');
  const workload = readDoc(o.workload, '--workload');
  const { plan, droppedPciNics } = placeWorkload(node, workload, { noHuge: !o.huge, noPci: !o.pci });
  const w = workload as WorkloadSpec;
  switch (o.format) {
    case 'eal': {
      const argv = renderEalArgs(plan, { lcores: o.lcores });
      for (let i = 0; i < droppedPciNics.length; i++) argv.push('--vdev', `net_null${i}`);
      return { text: shellLine(argv), json: argv, warnings: plan.warnings };
    }
    case 'testpmd': {
      const argv = ['dpdk-testpmd', ...renderTestpmdArgs(plan, { lcores: o.lcores, nullPorts: droppedPciNics.length, ...(w.testpmd ?? {}) })];
      return { text: shellLine(argv), json: argv, warnings: plan.warnings };
    }
    case 'vpp': {
      const text = renderVppStartupConf(plan, {
        ...(w.vpp?.buffersPerNuma !== undefined ? { buffersPerNuma: w.vpp.buffersPerNuma } : {}),
        ...(w.vpp?.uioDriver !== undefined ? { uioDriver: w.vpp.uioDriver } : {}),
      });
      return { text, json: text, warnings: plan.warnings };
    }
    case 'ovs': {
      const bridge = w.ovs?.bridge ?? 'br-dpdk';
      const cmds = [ovsSetOtherConfigArgs(plan), ovsAddBridgeArgs(bridge), ...ovsAddDpdkPortArgs(plan, bridge)];
      for (const n of plan.nics) {
        if (n.kind === 'vhost-user') cmds.push(ovsAddVhostUserClientPortArgs({ bridge, port: n.name, socketPath: n.socketPath, queues: n.queues }));
      }
      return { text: cmds.map(shellLine).join(''), json: cmds, warnings: plan.warnings };
    }
    case 'hugepages': {
      const res = renderHugepages(plan);
      const text = res.length === 0 ? `# ${plan.filePrefix}: no hugepages (--no-huge)\n` : res.map((r) => `${r.path} ${r.count}\n`).join('');
      return { text, json: res, warnings: plan.warnings };
    }
  }
}

/** Adds `dpdk-config render` to the program. */
export function addDpdkConfigCommands(program: Command, io: CliIo): void {
  const dc = program.command('dpdk-config').description('render DPDK / VPP / OVS-DPDK configuration locally (no appliance needed)');
  dc.command('render')
    .description('place a data plane workload on a node and print its EAL args, testpmd command, VPP startup.conf, OVS commands or hugepages')
    .requiredOption('--node <file>', 'node file (JSON/YAML): NUMA nodes, CPUs, free hugepages, NICs')
    .requiredOption('--workload <file>', 'workload file (JSON/YAML): workers, memory, NICs')
    .addOption(new Option('--format <format>', 'what to print').choices([...RENDER_FORMATS]).makeOptionMandatory())
    .option('--no-huge', 'use ordinary memory instead of hugepages (DPDK --no-huge)')
    .option('--no-pci', 'leave PCI NICs out (eal/testpmd: net_null ports stand in for them)')
    .addOption(new Option('--lcores <mode>', 'lcore ids: identity (-l) or remap (--lcores 0@cpu,...)').choices(['identity', 'remap']).default('identity'))
    .action((o: RenderOpts, cmd: Command) => {
      const r = renderDpdkConfig(o);
      for (const w of r.warnings) io.stderr.write(`warning: ${w}\n`);
      const output = cmd.optsWithGlobals<{ output?: string }>().output;
      io.stdout.write(output === 'json' ? JSON.stringify(r.json) + '\n' : r.text);
    });
}
