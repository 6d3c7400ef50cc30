/** The record schemas (the types are derived from them) accept what the scheduler writes and refuse mixed-up params. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Ajv } from 'ajv';
import { OpOccSchema, VnfSchema, requestSchemas, validateRequest, ADMIN_OPS, TENANT_OPS, type OpOcc } from '../src/index.js';

const ajv = new Ajv({ strict: false, allErrors: true, discriminator: true });
const at = '2026-12-01T00:00:00.000Z';
const base = { id: 'op-1', tenantId: 't', vnfId: 'vnf-1', operationState: 'PROCESSING' as const, startTime: at, stateEnteredTime: at, steps: [{ at, message: 'x' }] };

test('OpOcc.params: one shape per operation', () => {
  const valid = ajv.compile(OpOccSchema);
  const good: OpOcc[] = [
    { ...base, operation: 'INSTANTIATE' },
    { ...base, operation: 'SCALE', params: { replicas: 3, retriesHandled: 1 } },
    { ...base, operation: 'HEAL', params: { replicas: [0, 2], fromNode: 'n1', reason: 'drain', after: { tenantId: 't', id: 'op-0' }, targets: { '0': 2 } } },
    { ...base, operation: 'TERMINATE', params: { mode: 'FORCEFUL', supersedes: 'op-0' } },
    { ...base, operation: 'OPERATE', params: { changeStateTo: 'STOPPED' } },
  ];
  for (const o of good) assert.ok(valid(o), `${o.operation}: ${JSON.stringify(valid.errors)}`);
  for (const bad of [
    { ...base, operation: 'SCALE', params: { changeStateTo: 'STOPPED' } },
    { ...base, operation: 'SCALE' },
    { ...base, operation: 'TERMINATE', params: { mode: 'SOFT' } },
    { ...base, operation: 'OPERATE', params: { changeStateTo: 'STOPPED', replicas: 1 } },
    { ...base, operation: 'REBOOT', params: {} },
  ]) {
    assert.equal(valid(bad), false, JSON.stringify(bad));
  }
});

test('a VNF record validates against VnfSchema', () => {
  const valid = ajv.compile(VnfSchema);
  const vnf = {
    id: 'vnf-1', tenantId: 't', name: 'fw', instantiationState: 'INSTANTIATED', desiredReplicas: 1, createdAt: at, updatedAt: at,
    descriptor: { name: 'fw', replicas: 1, resources: { vcpus: 1, memoryMiB: 512 }, image: { ref: 'builtin:busybox' }, interfaces: [{ name: 'eth0', type: 'tap', network: 'mgmt' }] },
    replicas: [{ index: 0, state: 'RUNNING', nodeId: 'n1', interfaces: [{ name: 'eth0', type: 'tap', ips: ['10.0.0.2/24'], mac: '02:00:00:00:00:01' }], updatedAt: at }],
    lastOpOutcome: { opOccId: 'op-1', state: 'COMPLETED' },
  };
  assert.ok(valid(vnf), JSON.stringify(valid.errors));
  assert.equal(valid({ ...vnf, replicas: [{ ...vnf.replicas[0], state: 'DANCING' }] }), false);
});

test('every subject has a request schema, and validation names the field', () => {
  for (const op of [...ADMIN_OPS, ...TENANT_OPS]) assert.ok(requestSchemas[op], op);
  const req = validateRequest('vnfs.scale', { id: 'vnf-1', replicas: 2 });
  assert.equal(req.replicas, 2);
  assert.throws(() => validateRequest('vnfs.operate', { id: 'vnf-1', changeStateTo: 'PAUSED' }), (e: Error & { details?: { issues?: { field: string }[] } }) => e.details?.issues?.[0]?.field === 'changeStateTo');
});
