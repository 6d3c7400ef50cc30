/**
 * Reads a VPP `startup.conf` back: a generic parser (`parseVppConf`: sections of `key args...` lines and
 * `name args { ... }` blocks, `#` comments) and a typed reader (`readVppStartupConf`) of the settings the
 * renderer (vpp.ts) writes. Unknown sections and lines are kept in the tree and ignored by the reader.
 */
import { InvalidArgumentError } from '@edgenfv/contracts';
import { parseCpuList } from './cpus.js';

export interface VppConfItem {
  /** First word (`dev`, `main-core`, `plugin`...). */
  key: string;
  /** The words after it on the same line (`0000:81:10.2`, `8`...). */
  args: string[];
  /** A `{ ... }` block after the words, if any. */
  children?: VppConfItem[];
  line: number;
}

type Token = { t: 'word' | '{' | '}' | 'nl'; v: string; line: number };

function tokenize(text: string): Token[] {
  const out: Token[] = [];
  text.split('\n').forEach((raw, i) => {
    const line = i + 1;
    const s = raw.replace(/#.*$/, '');
    const re = /[{}]|[^\s{}]+/g;
    for (let m = re.exec(s); m; m = re.exec(s)) {
      const v = m[0];
      out.push({ t: v === '{' || v === '}' ? v : 'word', v, line });
    }
    out.push({ t: 'nl', v: '\n', line });
  });
  return out;
}

/** The whole file as a tree; unbalanced braces are an error naming the line. */
export function parseVppConf(text: string): VppConfItem[] {
  const toks = tokenize(text);
  let i = 0;
  const block = (closing: boolean, openLine: number): VppConfItem[] => {
    const items: VppConfItem[] = [];
    let cur: VppConfItem | undefined;
    while (i < toks.length) {
      const tk = toks[i++]!;
      if (tk.t === 'nl') {
        cur = undefined;
      } else if (tk.t === 'word') {
        if (cur) cur.args.push(tk.v);
        else items.push((cur = { key: tk.v, args: [], line: tk.line }));
      } else if (tk.t === '{') {
        if (!cur) throw new InvalidArgumentError([{ field: `line ${tk.line}`, message: '"{" without a name before it' }]);
        cur.children = block(true, tk.line);
        cur = undefined;
      } else {
        if (!closing) throw new InvalidArgumentError([{ field: `line ${tk.line}`, message: 'unmatched "}"' }]);
        return items;
      }
    }
    if (closing) throw new InvalidArgumentError([{ field: `line ${openLine}`, message: 'block opened here is never closed' }]);
    return items;
  };
  return block(false, 0);
}

export interface VppDev {
  pciAddress: string;
  name?: string;
  rxQueues?: number;
  txQueues?: number;
  rxDescriptors?: number;
  txDescriptors?: number;
}

export interface VppStartup {
  runtimeDir?: string;
  cliListen?: string;
  logFile?: string;
  execFile?: string;
  apiPrefix?: string;
  apiSocket?: string;
  mainCore?: number;
  workers: number[];
  mainHeapSize?: string;
  mainHeapPageSize?: string;
  buffersPerNuma?: number;
  bufferDataSizeBytes?: number;
  bufferPageSize?: string;
  devs: VppDev[];
  /** `vdev` lines: the device name and its devargs (`{iface: '/run/..', queues: '2', client: '1'}`). */
  vdevs: Array<{ name: string; args: Record<string, string> }>;
  noPci: boolean;
  noHugetlb: boolean;
  socketMemMiB?: number[];
  hugeDir?: string;
  iovaMode?: string;
  uioDriver?: string;
  noMultiSeg: boolean;
  noTxChecksumOffload: boolean;
  plugins: { defaultDisabled: boolean; enabled: string[]; disabled: string[] };
}

const int = (s: string | undefined, field: string): number => {
  const n = Number(s);
  if (s === undefined || !Number.isInteger(n)) throw new InvalidArgumentError([{ field, message: `must be an integer (got ${JSON.stringify(s)})` }]);
  return n;
};

/** The settings of a startup.conf, typed. */
export function readVppStartupConf(text: string): VppStartup {
  const out: VppStartup = {
    workers: [],
    devs: [],
    vdevs: [],
    noPci: false,
    noHugetlb: false,
    noMultiSeg: false,
    noTxChecksumOffload: false,
    plugins: { defaultDisabled: false, enabled: [], disabled: [] },
  };
  const section = (tree: VppConfItem[], name: string): VppConfItem[] => tree.filter((s) => s.key === name).flatMap((s) => s.children ?? []);
  const tree = parseVppConf(text);
  for (const it of section(tree, 'unix')) {
    if (it.key === 'runtime-dir') out.runtimeDir = it.args[0];
    else if (it.key === 'cli-listen') out.cliListen = it.args[0];
    else if (it.key === 'log') out.logFile = it.args[0];
    else if (it.key === 'exec') out.execFile = it.args[0];
  }
  for (const it of section(tree, 'api-segment')) if (it.key === 'prefix') out.apiPrefix = it.args[0];
  for (const it of section(tree, 'socksvr')) if (it.key === 'socket-name') out.apiSocket = it.args[0];
  for (const it of section(tree, 'cpu')) {
    if (it.key === 'main-core') out.mainCore = int(it.args[0], 'cpu.main-core');
    else if (it.key === 'corelist-workers') out.workers = parseCpuList(it.args.join(''));
  }
  for (const it of section(tree, 'memory')) {
    if (it.key === 'main-heap-size') out.mainHeapSize = it.args[0];
    else if (it.key === 'main-heap-page-size') out.mainHeapPageSize = it.args[0];
  }
  for (const it of section(tree, 'buffers')) {
    if (it.key === 'buffers-per-numa') out.buffersPerNuma = int(it.args[0], 'buffers.buffers-per-numa');
    else if (it.key === 'default' && it.args[0] === 'data-size') out.bufferDataSizeBytes = int(it.args[1], 'buffers.default data-size');
    else if (it.key === 'page-size') out.bufferPageSize = it.args[0];
  }
  for (const it of section(tree, 'dpdk')) {
    switch (it.key) {
      case 'dev': {
        const dev: VppDev = { pciAddress: it.args[0] ?? '' };
        for (const d of it.children ?? []) {
          if (d.key === 'name') dev.name = d.args[0]!;
          else if (d.key === 'num-rx-queues') dev.rxQueues = int(d.args[0], `dpdk.dev ${dev.pciAddress}.num-rx-queues`);
          else if (d.key === 'num-tx-queues') dev.txQueues = int(d.args[0], `dpdk.dev ${dev.pciAddress}.num-tx-queues`);
          else if (d.key === 'num-rx-desc') dev.rxDescriptors = int(d.args[0], `dpdk.dev ${dev.pciAddress}.num-rx-desc`);
          else if (d.key === 'num-tx-desc') dev.txDescriptors = int(d.args[0], `dpdk.dev ${dev.pciAddress}.num-tx-desc`);
        }
        out.devs.push(dev);
        break;
      }
      case 'vdev': {
        const [name = '', ...kv] = (it.args[0] ?? '').split(',');
        out.vdevs.push({ name, args: Object.fromEntries(kv.map((p) => [p.slice(0, p.indexOf('=')), p.slice(p.indexOf('=') + 1)])) });
        break;
      }
      case 'no-pci': out.noPci = true; break;
      case 'no-hugetlb': out.noHugetlb = true; break;
      case 'socket-mem': out.socketMemMiB = (it.args[0] ?? '').split(',').map((x) => int(x, 'dpdk.socket-mem')); break;
      case 'huge-dir': out.hugeDir = it.args[0]; break;
      case 'iova-mode': out.iovaMode = it.args[0]; break;
      case 'uio-driver': out.uioDriver = it.args[0]; break;
      case 'no-multi-seg': out.noMultiSeg = true; break;
      case 'no-tx-checksum-offload': out.noTxChecksumOffload = true; break;
    }
  }
  for (const it of section(tree, 'plugins')) {
    if (it.key !== 'plugin') continue;
    const name = it.args[0] ?? '';
    const state = it.children?.[0]?.key;
    if (name === 'default') out.plugins.defaultDisabled = state === 'disable';
    else if (state === 'enable') out.plugins.enabled.push(name);
    else if (state === 'disable') out.plugins.disabled.push(name);
  }
  return out;
}
