/** CPU list and mask helpers shared by the renderers (pure). */

/** `[2,3,4,6,8,9]` -> `"2-4,6,8-9"` (sorted, duplicates dropped). The form DPDK `-l` and VPP `corelist-*` take. */
export function formatCpuList(cpus: readonly number[]): string {
  const sorted = [...new Set(cpus)].sort((a, b) => a - b);
  const parts: string[] = [];
  let i = 0;
  while (i < sorted.length) {
    const start = sorted[i]!;
    let end = start;
    while (i + 1 < sorted.length && sorted[i + 1] === end + 1) end = sorted[++i]!;
    parts.push(start === end ? String(start) : `${start}-${end}`);
    i++;
  }
  return parts.join(',');
}

/** Hex CPU mask as OVS and DPDK `-c` take it: `[1,2]` -> `"0x6"`. BigInt, so CPUs above 52 stay exact. */
export function cpuMask(cpus: readonly number[]): string {
  let mask = 0n;
  for (const c of cpus) mask |= 1n << BigInt(c);
  return `0x${mask.toString(16)}`;
}

/** `"2-4,6,8-9"` -> `[2,3,4,6,8,9]` (the inverse of formatCpuList). */
export function parseCpuList(s: string): number[] {
  const out: number[] = [];
  for (const part of s.split(',').filter((p) => p.length > 0)) {
    const m = /^(\d+)(?:-(\d+))?$/.exec(part.trim());
    if (!m) throw new TypeError(`not a CPU list: ${JSON.stringify(s)}`);
    const a = Number(m[1]);
    const b = m[2] !== undefined ? Number(m[2]) : a;
    if (b < a) throw new TypeError(`not a CPU list: ${JSON.stringify(s)} (${part} runs backwards)`);
    for (let c = a; c <= b; c++) out.push(c);
  }
  return out;
}
