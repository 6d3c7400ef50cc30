// A separate allocator process for the IPAM concurrency test: argv = url, network JSON, owner prefix, count.
import { connect } from 'nats';
import { Ipam } from '../src/ipam.js';

const [url, netJson, prefix, countS] = process.argv.slice(2);
const nc = await connect({ servers: url! });
const ipam = await Ipam.open(nc, JSON.parse(netJson!));
const count = Number(countS);
const name = JSON.parse(netJson!)[0].name as string;
const results = await Promise.all(
  Array.from({ length: count }, (_, i) => ipam.allocate(name, `${prefix}.a${i}`).then((l) => l.address)),
);
process.stdout.write(JSON.stringify(results));
await nc.close();
