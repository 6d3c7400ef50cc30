/**
 * Kernel drivers for PCI NICs, loaded on demand (the guest has no udev): a passed-through VF appears as a PCI
 * function without a driver; its `modalias` (`pci:v00008086d000010CAsv...`) is matched against the kernel's
 * `modules.alias` (the shell patterns depmod writes) and the first matching module is loaded with modprobe. The guest
 * image carries the VF drivers (igbvf, iavf, ixgbevf, i40e, mlx5_core, ice) without loading them at boot.
 */
import { execFile } from 'node:child_process';
import { readdir, readFile, readlink } from 'node:fs/promises';
import { release } from 'node:os';
import { basename, join } from 'node:path';
import { promisify } from 'node:util';

const pexec = promisify(execFile);

export interface PciDriverDeps {
  sysRoot: string;
  /** `/lib/modules/<release>` (its modules.alias). */
  modulesDir?: string;
  modprobe?: (module: string) => Promise<void>;
  log?: { info(o: object, m: string): void; warn(o: object, m: string): void };
}

/** A modules.alias pattern (`*`, `?`, `[...]`) as a RegExp. */
function aliasRe(pattern: string): RegExp {
  let re = '';
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i]!;
    if (c === '*') re += '.*';
    else if (c === '?') re += '.';
    else if (c === '[') {
      const end = pattern.indexOf(']', i + 1);
      if (end < 0) re += '\\[';
      else {
        re += `[${pattern.slice(i + 1, end).replace(/^!/, '^').replace(/\\/g, '\\\\')}]`;
        i = end;
      }
    } else re += c.replace(/[.+^${}()|\\]/g, '\\$&');
  }
  return new RegExp(`^${re}$`);
}

export class PciDrivers {
  private aliases?: Promise<{ re: RegExp; module: string }[]>;
  /** PCI address -> the load already tried (one modprobe per device, not one per poll). */
  private readonly tried = new Map<string, Promise<string | null>>();
  private readonly modulesDir: string;
  private readonly modprobe: (m: string) => Promise<void>;

  constructor(private readonly deps: PciDriverDeps) {
    this.modulesDir = deps.modulesDir ?? join('/lib/modules', release());
    this.modprobe = deps.modprobe ?? (async (m) => void (await pexec('modprobe', [m])));
  }

  private loadAliases(): Promise<{ re: RegExp; module: string }[]> {
    return (this.aliases ??= readFile(join(this.modulesDir, 'modules.alias'), 'utf8').then(
      (text) =>
        text
          .split('\n')
          .map((l) => /^alias\s+(pci:\S+)\s+(\S+)$/.exec(l.trim()))
          .filter((m): m is RegExpExecArray => m !== null)
          .map((m) => ({ re: aliasRe(m[1]!), module: m[2]! })),
      () => [],
    ));
  }

  /** The module modules.alias names for this modalias, or null. */
  async moduleFor(modalias: string): Promise<string | null> {
    for (const a of await this.loadAliases()) if (a.re.test(modalias)) return a.module;
    return null;
  }

  /**
   * Makes sure the PCI function has a driver: when it has none, loads the module its modalias names (once per
   * device). Returns the module loaded, or null (already bound, no such device, no module known).
   */
  ensure(pci: string): Promise<string | null> {
    let p = this.tried.get(pci);
    if (!p) {
      p = this.load(pci).catch((err: Error) => {
        this.deps.log?.warn({ pci, err: err.message }, 'loading the driver of a PCI device failed');
        return null;
      });
      this.tried.set(pci, p);
    }
    return p;
  }

  private async load(pci: string): Promise<string | null> {
    const dev = join(this.deps.sysRoot, 'bus', 'pci', 'devices', pci);
    const bound = await readlink(join(dev, 'driver')).then(basename, () => null);
    if (bound) return null;
    const modalias = (await readFile(join(dev, 'modalias'), 'utf8').catch(() => '')).trim();
    if (!modalias) return null;
    const module = await this.moduleFor(modalias);
    if (!module) {
      this.deps.log?.warn({ pci, modalias }, 'no kernel module in modules.alias for this PCI device');
      return null;
    }
    await this.modprobe(module);
    this.deps.log?.info({ pci, module }, 'driver loaded for a PCI device');
    return module;
  }

  /** Every network-class PCI function without a driver (a VF present at boot): load its driver. */
  async scan(): Promise<string[]> {
    const root = join(this.deps.sysRoot, 'bus', 'pci', 'devices');
    const loaded: string[] = [];
    for (const pci of await readdir(root).catch(() => [] as string[])) {
      const cls = (await readFile(join(root, pci, 'class'), 'utf8').catch(() => '')).trim();
      if (!cls.startsWith('0x02')) continue; // network controllers only
      const m = await this.ensure(pci);
      if (m) loaded.push(m);
    }
    return loaded;
  }
}
