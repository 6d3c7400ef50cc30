/** Seeded PRNG (mulberry32): a decision made with the same seed over the same views replays exactly. */
export type Rng = () => number;

export function mulberry32(seed: number): Rng {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function gcd(a: number, b: number): number {
  while (b) [a, b] = [b, a % b];
  return a;
}

/**
 * A seeded pseudo-random visiting order of 0..n-1 in O(1) memory: a random start and a random stride coprime
 * with n (every index exactly once). Cheaper than a Fisher-Yates shuffle of 10,000 nodes per decision.
 */
export function* seededOrder(n: number, rng: Rng): Generator<number> {
  if (n <= 0) return;
  const start = Math.floor(rng() * n);
  let stride = 1;
  if (n > 2) {
    stride = 1 + Math.floor(rng() * (n - 1));
    while (gcd(stride, n) !== 1) stride = (stride % (n - 1)) + 1;
  }
  for (let i = 0, x = start; i < n; i++, x = (x + stride) % n) yield x;
}
