/** Entry of the CNI executables (`edgenfv-<type>`): the type comes from argv[2] or the executable's name. */
import { readFileSync } from 'node:fs';
import { basename } from 'node:path';
import { ATTACHMENT_TYPES, type AttachmentType } from '@edgenfv/contracts';
import { runCni } from './cni.js';
import { pluginFor, stateDirOf } from './factory.js';
import { DEFAULT_CNI_SOCKET, startCniServer } from './server.js';

export async function cniMain(argv: string[] = process.argv, env: NodeJS.ProcessEnv = process.env): Promise<number> {
  if (argv[2] === '--serve') {
    const srv = await startCniServer({ socketPath: env.EDGENFV_CNI_SOCKET || DEFAULT_CNI_SOCKET });
    process.stderr.write(`edgenfv-cnid: serving CNI calls on ${srv.socketPath}\n`);
    await new Promise<void>((resolve) => {
      process.once('SIGTERM', resolve);
      process.once('SIGINT', resolve);
    });
    await srv.close();
    return 0;
  }
  const fromName = basename(argv[1] ?? '').replace(/^(node-)?edgenfv-/, '').replace(/\.c?js$/, '');
  const type = (ATTACHMENT_TYPES as readonly string[]).includes(argv[2] ?? '') ? argv[2] : fromName;
  if (!(ATTACHMENT_TYPES as readonly string[]).includes(type ?? '')) {
    process.stdout.write(JSON.stringify({ cniVersion: '1.0.0', code: 4, msg: `unknown plugin type ${JSON.stringify(type)}: call as edgenfv-{${ATTACHMENT_TYPES.join(',')}}` }));
    return 1;
  }
  const stdin = env.CNI_COMMAND === 'VERSION' ? '' : readStdin();
  const out = await runCni(type as AttachmentType, env, stdin, { plugin: (conf, e) => pluginFor(type as AttachmentType, stateDirOf(conf, e), e) });
  process.stdout.write(out.stdout);
  return out.exitCode;
}

function readStdin(): string {
  try {
    return readFileSync(0, 'utf8');
  } catch {
    return '';
  }
}
