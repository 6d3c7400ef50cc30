import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { InvalidArgumentError, NotFoundError } from '@edgenfv/contracts/internal/errors';
import { ContainerRuntime } from '../src/containers/runtime.js';
import { silentLog } from '../src/log.js';
import { makeNetns, crunWrapper } from './netns-helper.js';

let dir: string;
let ns: ReturnType<typeof makeNetns>;
let rt: ContainerRuntime;

before(() => {
  dir = mkdtempSync(join(tmpdir(), 'ga-ctr-'));
  ns = makeNetns('ctr');
  // "host network" of these containers is the test's netns, so the vrouter flips ip_forward there, not on this host
  rt = new ContainerRuntime({ stateDir: dir, busybox: '/usr/bin/busybox', networkNamespacePath: `/var/run/netns/${ns.name}`, crun: crunWrapper(dir), log: silentLog });
});
after(async () => {
  await rt?.close();
  ns?.remove();
  rmSync(dir, { recursive: true, force: true });
});

const forwarding = () => ns.ip('netns', 'exec', ns.name, 'cat', '/proc/sys/net/ipv4/ip_forward').trim();
const fwd = () => {
  // ip -n NS does not run programs; read the netns sysctl through ip netns exec
  return forwarding();
};

test('builtin:vrouter runs with crun: forwarding on, logs kept and streamed, exec, SIGTERM -> exit 0', async () => {
  const created = await rt.create({ id: 'vr1', image: 'builtin:vrouter' });
  assert.equal(created.state, 'CREATED');
  const started = await rt.start('vr1');
  assert.equal(started.state, 'RUNNING');
  // the container's own pid (crun's pid file, written when crun has made the container): that process goes on to
  // run the image's program (crun's own init part may still be running it when the pid is read: waited for)
  assert.ok(started.pid > 0, `pid ${started.pid}`);
  let cmdline = '';
  for (let i = 0; i < 100 && !/vrouter|busybox|sh\0/.test(cmdline); i++) {
    cmdline = readFileSync(`/proc/${started.pid}/cmdline`, 'utf8');
    if (!/vrouter|busybox|sh\0/.test(cmdline)) await new Promise((r) => setTimeout(r, 20));
  }
  assert.match(cmdline, /vrouter|busybox|sh\0/);
  // wait for its first log line (it turns forwarding on before printing it)
  let text = '';
  for (let i = 0; i < 100 && !text.includes('forwarding on'); i++) {
    text = '';
    for await (const c of rt.logs('vr1')) text += c.data.toString();
    if (!text.includes('forwarding on')) await new Promise((r) => setTimeout(r, 50));
  }
  assert.match(text, /vrouter: forwarding on/);
  assert.equal(fwd(), '1');
  const ex = await rt.exec('vr1', ['cat', '/proc/sys/net/ipv4/ip_forward']);
  assert.equal(ex.exitCode, 0);
  assert.equal(ex.stdout.toString().trim(), '1');
  const follow = (async () => {
    let all = '';
    for await (const c of rt.logs('vr1', { follow: true })) all += c.data.toString();
    return all;
  })();
  await rt.signal('vr1', 'SIGTERM');
  const done = await rt.wait('vr1');
  assert.equal(done.state, 'STOPPED');
  assert.equal(done.exitCode, 0);
  assert.match(await follow, /vrouter: stopping/);
  assert.equal(fwd(), '0');
  await rt.delete('vr1');
  await rt.delete('vr1'); // already gone: success
  assert.deepEqual(rt.list(), []);
});

test('a failing container reports its exit code and its last log lines', async () => {
  await rt.create({ id: 'bad', image: 'builtin:busybox', command: ['sh', '-c', 'echo starting; echo "fatal: no config" >&2; exit 7'] });
  await rt.start('bad');
  const st = await rt.wait('bad');
  assert.equal(st.exitCode, 7);
  const tail = await rt.tail('bad', 5);
  assert.ok(tail.includes('fatal: no config'), tail.join('|'));
  const last = [];
  for await (const c of rt.logs('bad', { tailLines: 1 })) last.push(`${c.stream}:${c.data.toString().trim()}`);
  assert.deepEqual(last.sort(), ['stderr:fatal: no config', 'stdout:starting']);
  // a stopped container runs again (OPERATE STARTED): same bundle, its logs go on
  await rt.start('bad');
  assert.equal((await rt.wait('bad')).exitCode, 7);
  assert.equal((await rt.tail('bad', 10)).filter((l) => l === 'starting').length, 2);
  await rt.delete('bad');
});

test('bad requests are refused by field; unknown containers are NOT_FOUND', async () => {
  await assert.rejects(rt.create({ id: 'Bad_Id', image: 'docker.io/nginx', env: ['1X=y'], cwd: 'rel' }), (e: unknown) => {
    assert.ok(e instanceof InvalidArgumentError);
    assert.deepEqual(e.issues.map((i) => i.field).sort(), ['cwd', 'env[0]', 'id', 'image']);
    return true;
  });
  await assert.rejects(rt.start('nope'), NotFoundError);
  await rt.create({ id: 'dup', image: 'builtin:busybox', command: ['true'] });
  await assert.rejects(rt.create({ id: 'dup', image: 'builtin:busybox' }), /exists/);
  await assert.rejects(rt.signal('dup', 'SIGSTOP'), InvalidArgumentError);
  await rt.delete('dup');
});
