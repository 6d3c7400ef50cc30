/**
 * `nfv.v1.tenant.<t>.notifications.list`: a tenant's notifications kept in the stream EDGENFV_EVENTS, read by the
 * scheduler for it, so a tenant replays its own notifications without any JetStream permission (its credentials
 * may only subscribe to `nfv.v1.tenant.<t>.events.>` live; docs/security.md).
 */
import { EVENTS_STREAM, UnavailableError, type NotificationsList, type NotificationsListRequest, type StoredNotification } from '@edgenfv/contracts';
import type { MsgRequest } from 'nats';
import type { ApiContext } from './context.js';

export async function listNotifications(ctx: ApiContext, tenantId: string, req: NotificationsListRequest): Promise<NotificationsList> {
  const filter = `nfv.v1.tenant.${tenantId}.events.${req.vnfId ?? '>'}`;
  const limit = req.limit ?? 100;
  const jsm = await ctx.store.nc.jetstreamManager();
  let lastSeq: number;
  try {
    lastSeq = (await jsm.streams.info(EVENTS_STREAM)).state.last_seq;
  } catch (err) {
    throw new UnavailableError(`cannot read the events stream ${EVENTS_STREAM}: ${(err as Error).message}`, { cause: err });
  }
  const items: StoredNotification[] = [];
  let seq = (req.afterSeq ?? 0) + 1;
  while (items.length < limit && seq <= lastSeq) {
    let m;
    try {
      // the next message at or after seq on the tenant's subjects (nats-server >= 2.9)
      m = await jsm.streams.getMessage(EVENTS_STREAM, { seq, next_by_subj: filter } as unknown as MsgRequest);
    } catch (err) {
      if (/no message found|not found/i.test((err as Error).message)) break;
      throw new UnavailableError(`cannot read ${EVENTS_STREAM}: ${(err as Error).message}`, { cause: err });
    }
    if (m.seq > lastSeq) break;
    let event: unknown;
    try {
      event = m.json();
    } catch {
      event = undefined;
    }
    if (event !== undefined) items.push({ seq: m.seq, subject: m.subject, event });
    seq = m.seq + 1;
  }
  return { items, lastSeq: items.length === limit ? items[items.length - 1]!.seq : lastSeq };
}
