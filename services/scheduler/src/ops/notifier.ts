/**
 * Publishes lifecycle notifications on `nfv.v1.tenant.<t>.events.<v>` through JetStream, so that they are kept in
 * the EDGENFV_EVENTS stream and a client can replay them.
 */
import type { JetStreamClient } from 'nats';
import { subjects, type EventPayload } from '@edgenfv/contracts';
import type { Logger } from '@edgenfv/telemetry';

export class Notifier {
  constructor(
    private readonly js: JetStreamClient,
    private readonly logger: Logger,
  ) {}

  async publish(tenantId: string, event: EventPayload): Promise<void> {
    try {
      await this.js.publish(subjects.events(tenantId, event.vnfId), JSON.stringify(event));
    } catch (err) {
      // A lost notification must not fail the operation it reports on: the op occurrence in KV is the truth.
      this.logger.warn({ err, tenantId, vnfId: event.vnfId }, 'could not publish notification');
    }
  }
}
