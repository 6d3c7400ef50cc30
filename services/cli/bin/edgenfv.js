#!/usr/bin/env node
// The `edgenfv` command: runs the compiled CLI (build first: npx tsc -b services/cli).
import { main } from '../dist/src/main.js';
process.exitCode = await main(process.argv);
