export { runHostChecks, promisesFromNodeConfig, type CheckStatus, type HostCheck, type HostCheckReport, type HostCheckOptions, type HostPromises, type Exec } from './checks.js';
