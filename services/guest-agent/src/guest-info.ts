/** Guest details and metrics, from os, /proc and the netlink port. */
import { cpus, release, totalmem } from 'node:os';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { GuestDetails, GuestMetrics } from '@edgenfv/contracts/internal/agent';
import { describe, type NetDeps } from './net/interfaces.js';

export async function guestDetails(net: NetDeps, agentVersion: string): Promise<GuestDetails> {
  return {
    kernelRelease: release(),
    memoryTotalBytes: totalmem(),
    cpus: cpus().length,
    nics: await describe(net),
    agentVersion,
  };
}

/** USER_HZ is 100 on Linux x86: one tick is 10 ms. */
export async function guestMetrics(net: NetDeps, containersRunning: number, procRoot = '/proc'): Promise<GuestMetrics> {
  const stat = await readFile(join(procRoot, 'stat'), 'utf8');
  const cpu = (stat.split('\n').find((l) => l.startsWith('cpu ')) ?? 'cpu 0 0 0 0').trim().split(/\s+/).slice(1).map(Number);
  const mem = await readFile(join(procRoot, 'meminfo'), 'utf8');
  const kb = (key: string): number => Number(new RegExp(`^${key}:\\s+(\\d+)`, 'm').exec(mem)?.[1] ?? 0) * 1024;
  const stats = await net.ip.stats();
  const self = await readFile(join(procRoot, 'self', 'status'), 'utf8').catch(() => '');
  const rssAnon = Number(/^RssAnon:\s+(\d+)/m.exec(self)?.[1] ?? 0) * 1024;
  return {
    cpuUserMs: ((cpu[0] ?? 0) + (cpu[1] ?? 0)) * 10,
    cpuSystemMs: (cpu[2] ?? 0) * 10,
    cpuIdleMs: (cpu[3] ?? 0) * 10,
    memoryTotalBytes: kb('MemTotal'),
    memoryAvailableBytes: kb('MemAvailable'),
    agentRssBytes: process.memoryUsage.rss(),
    nics: stats.filter((s) => s.name !== 'lo'),
    containersRunning,
    agentRssAnonBytes: rssAnon,
  };
}
