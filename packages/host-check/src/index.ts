export { runHostChecks, promisesFromNodeConfig, type HostCheckReport, type Exec } from './checks.js';
