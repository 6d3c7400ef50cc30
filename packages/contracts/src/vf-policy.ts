/**
 * Operator-owned settings of an SR-IOV VF (VLAN, QoS, spoofchk, trust): the operator's network config fixes them
 * per physnet; a requester (a tenant's descriptor, a CNI config) may repeat them but never change them. One rule,
 * used by the scheduler's API and by netplugins' SR-IOV plugin on the node, so both refuse the same thing with the
 * same words.
 */
import { PermissionDeniedError, type FieldIssue } from './errors.js';

export interface VfPolicy {
  vlan?: number;
  vlanQos?: number;
  spoofchk?: boolean;
  trust?: boolean;
}
export const VF_POLICY_FIELDS = ['vlan', 'vlanQos', 'spoofchk', 'trust'] as const;

/**
 * The asked settings that differ from what the operator set (`prefix` names where they were asked, e.g.
 * `descriptor.interfaces[0]`). A field the operator left unset is the requester's to choose, except `trust`,
 * which only the operator can turn on.
 */
export function vfPolicyViolations(asked: VfPolicy, operator: VfPolicy, physnet: string, prefix = ''): FieldIssue[] {
  const issues: FieldIssue[] = [];
  const at = (k: string) => (prefix ? `${prefix}.${k}` : k);
  for (const k of VF_POLICY_FIELDS) {
    const a = asked[k];
    if (a === undefined) continue;
    const o = operator[k];
    if (o !== undefined && a !== o)
      issues.push({ field: at(k), message: `is set by the operator for physnet ${physnet} (${String(o)}); asked ${String(a)}` });
    else if (o === undefined && k === 'trust' && a === true)
      issues.push({ field: at(k), message: `trust on a VF of physnet ${physnet} needs the operator's consent (the operator's network config sets trust)` });
  }
  return issues;
}

/** Throws PERMISSION_DENIED naming every field the requester may not set. */
export function checkVfPolicy(asked: VfPolicy, operator: VfPolicy, physnet: string, prefix = ''): void {
  const issues = vfPolicyViolations(asked, operator, physnet, prefix);
  if (issues.length) throw new PermissionDeniedError(issues.map((i) => `${i.field}: ${i.message}`).join('; '), { issues });
}

/** The settings the VF gets: the operator's, and the requester's where the operator left a field open. */
export function effectiveVfPolicy(asked: VfPolicy, operator: VfPolicy): VfPolicy {
  const out: VfPolicy = {};
  for (const k of VF_POLICY_FIELDS) {
    const v = operator[k] ?? asked[k];
    if (v !== undefined) (out as Record<string, unknown>)[k] = v;
  }
  return out;
}
