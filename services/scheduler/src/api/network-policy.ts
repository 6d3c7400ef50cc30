/**
 * What a tenant's VNFD may not choose on the data plane besides a VF's settings (contracts vf-policy.ts, per
 * physnet): networks scoped to other tenants, a macvtap parent link other than the network's, a multicast MAC or
 * one outside the network's MAC range. They are the operator's (the deployment's networks); asking for another
 * value is PERMISSION_DENIED naming the field, and nothing is written (docs/security.md).
 */
import { PermissionDeniedError, vfPolicyViolations, type FieldIssue, type NetworkConfig, type Vnfd } from '@edgenfv/contracts';

export function checkNetworkPolicy(networks: ReadonlyMap<string, NetworkConfig>, tenantId: string, d: Vnfd): void {
  const issues: FieldIssue[] = [];
  (d.interfaces ?? []).forEach((i, n) => {
    const at = `descriptor.interfaces[${n}]`;
    const net = i.network !== undefined ? networks.get(i.network) : undefined;
    const deny = (field: string, message: string): void => void issues.push({ field: `${at}.${field}`, message });
    if (net?.tenants && !net.tenants.includes(tenantId)) deny('network', `network "${net.name}" is not open to tenant "${tenantId}"`);
    if (i.mac !== undefined) {
      const mac = i.mac.toLowerCase();
      if ((parseInt(mac.slice(0, 2), 16) & 1) === 1) deny('mac', `${i.mac} is a multicast MAC: an interface's MAC must be unicast`);
      else if (net?.macPrefix && !mac.startsWith(net.macPrefix)) deny('mac', `${i.mac} is outside network "${net.name}"'s MAC range (${net.macPrefix}...)`);
    }
    // a VF's VLAN, spoofchk and trust are the network's (the one rule the node applies too: contracts vf-policy.ts)
    if (i.type === 'sriov') {
      const operator = { ...(net?.vlan !== undefined ? { vlan: net.vlan } : {}), ...(net?.spoofchk !== undefined ? { spoofchk: net.spoofchk } : {}), ...(net?.trust !== undefined ? { trust: net.trust } : {}) };
      issues.push(...vfPolicyViolations(i, operator, i.physnet, at));
    }
    if (i.type === 'macvtap' && i.parent !== undefined && i.parent !== net?.parent) {
      deny('parent', net?.parent ? `network "${net.name}" hangs off ${net.parent}, not ${i.parent}` : "the parent link is the operator's: name a network that has one");
    }
  });
  if (issues.length) throw new PermissionDeniedError(issues.map((i) => `${i.field}: ${i.message}`).join('; '), { issues });
}
