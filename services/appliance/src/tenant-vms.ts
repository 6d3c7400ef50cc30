/**
 * What keeps running when the appliance stops: the tenant VMs (one QEMU per tenant sandbox), which a plain stop
 * leaves running so that the next start re-adopts them without interrupting the tenants' VNFs. Read from the node
 * agent's sandbox records (`<stateDir>/sandboxes/*.json`); a VM whose process is gone is not listed.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

export interface TenantVm {
  sandboxId: string;
  tenantId: string;
  pid?: number;
  replicas: number;
}

export function tenantVms(stateDir: string): TenantVm[] {
  const dir = join(stateDir, 'sandboxes');
  if (!existsSync(dir)) return [];
  const out: TenantVm[] = [];
  for (const f of readdirSync(dir).filter((n) => n.endsWith('.json')).sort()) {
    try {
      const r = JSON.parse(readFileSync(join(dir, f), 'utf8')) as { sandboxId?: unknown; tenantId?: unknown; vm?: { pid?: unknown }; replicas?: Record<string, unknown> };
      if (typeof r.sandboxId !== 'string' || typeof r.tenantId !== 'string') continue;
      const pid = typeof r.vm?.pid === 'number' ? r.vm.pid : undefined;
      if (pid !== undefined && !existsSync(`/proc/${pid}`)) continue;
      out.push({ sandboxId: r.sandboxId, tenantId: r.tenantId, ...(pid !== undefined ? { pid } : {}), replicas: Object.keys(r.replicas ?? {}).length });
    } catch {
      /* a record being rewritten: skip */
    }
  }
  return out;
}

/** The sentence Ctrl-C prints about them. */
export function describeStop(vms: readonly TenantVm[], stopVms: boolean): string {
  if (vms.length === 0) return 'edgenfv: stopping the appliance (no tenant VM is running).';
  const list = vms.map((v) => `  ${v.tenantId}: sandbox ${v.sandboxId}${v.pid ? `, QEMU pid ${v.pid}` : ''}, ${v.replicas} replica${v.replicas === 1 ? '' : 's'}`).join('\n');
  if (stopVms) return `edgenfv: stopping the appliance and, as asked (--stop-vms), its ${vms.length} tenant VM(s):\n${list}`;
  return (
    `edgenfv: stopping the appliance. ${vms.length} tenant VM(s) keep running, so that the next \`npm start\` re-adopts them ` +
    `without interrupting the tenants' VNFs:\n${list}\n` +
    `  To stop them too: start with \`npm start -- --stop-vms\` and Ctrl-C again (or terminate the VNFs first).`
  );
}
