/**
 * Histograms for the page from the services' own Prometheus text (`/metrics` of the scheduler and node agents):
 * boot duration (`edgenfv_vm_boot_duration_seconds`) and placement latency
 * (`edgenfv_placement_decision_duration_seconds`), buckets summed over labels and targets.
 */
export const HISTOGRAMS = {
  boot: 'edgenfv_vm_boot_duration_seconds',
  placement: 'edgenfv_placement_decision_duration_seconds',
} as const;

export interface HistogramView {
  metric: string;
  /** Upper bounds (le) with cumulative counts, `+Inf` last. */
  buckets: Array<{ le: string; count: number }>;
  count: number;
  sum: number;
}

const LINE_RE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)/;

/** Adds the histogram `metric` found in Prometheus exposition `text` into `into`. */
export function addHistogram(text: string, metric: string, into: HistogramView): void {
  const byLe = new Map(into.buckets.map((b) => [b.le, b]));
  for (const line of text.split('\n')) {
    if (!line.startsWith(metric)) continue;
    const m = LINE_RE.exec(line);
    if (!m) continue;
    const [, name, labels = '', raw] = m;
    const value = Number(raw);
    if (!Number.isFinite(value)) continue;
    if (name === `${metric}_bucket`) {
      const le = /le="([^"]+)"/.exec(labels)?.[1];
      if (!le) continue;
      let b = byLe.get(le);
      if (!b) {
        b = { le, count: 0 };
        byLe.set(le, b);
        into.buckets.push(b);
      }
      b.count += value;
    } else if (name === `${metric}_count`) into.count += value;
    else if (name === `${metric}_sum`) into.sum += value;
  }
  into.buckets.sort((a, b) => (a.le === '+Inf' ? 1 : b.le === '+Inf' ? -1 : Number(a.le) - Number(b.le)));
}

/** Reads every target and returns both histograms; targets that do not answer are listed in `errors`. */
export async function readHistograms(urls: readonly string[], timeoutMs = 2_000): Promise<{ boot: HistogramView; placement: HistogramView; errors: string[] }> {
  const boot: HistogramView = { metric: HISTOGRAMS.boot, buckets: [], count: 0, sum: 0 };
  const placement: HistogramView = { metric: HISTOGRAMS.placement, buckets: [], count: 0, sum: 0 };
  const errors: string[] = [];
  await Promise.all(
    urls.map(async (url) => {
      try {
        const res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
        if (!res.ok) throw new Error(`HTTP ${res.status}`);
        const text = await res.text();
        addHistogram(text, HISTOGRAMS.boot, boot);
        addHistogram(text, HISTOGRAMS.placement, placement);
      } catch (err) {
        errors.push(`${url}: ${(err as Error).message}`);
      }
    }),
  );
  return { boot, placement, errors };
}
