/** The bundled CNI executable's entry (see scripts/build-bin.mjs). */
import { cniMain } from './main.js';

cniMain().then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stdout.write(JSON.stringify({ cniVersion: '1.0.0', code: 100, msg: err instanceof Error ? err.message : String(err) }));
    process.exitCode = 1;
  },
);
