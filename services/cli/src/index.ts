export { main, processIo } from './main.js';
export { buildProgram, readVnfd, type CliIo } from './program.js';
export { EXIT_CODES, EXIT_OK, EXIT_USAGE, exitCodeOf } from './exit-codes.js';
export { render, renderEvent, table, detailLines, type OutputFormat } from './format.js';
