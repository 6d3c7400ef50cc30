/**
 * Framing for the host<->guest agent channel: one virtio-serial port (an unframed byte stream that survives host
 * reconnects) carries many byte streams (one per gRPC connection), after Kata 1.x's yamux-over-virtio-serial.
 *
 * Frame: magic u32 | type u8 | epoch u32 | stream u32 | length u32 | header checksum u8 | payload[length]
 * (big endian, 19 bytes of header). A session epoch is chosen by the host at each (re)connect and announced with
 * HELLO; the guest resets every stream and answers HELLO_ACK with the same epoch; both sides then drop any frame
 * of another epoch, so bytes queued for an old host connection never leak into the new one. A decoder that meets
 * bytes that are not a valid header skips forward to the next magic (resync after a torn frame).
 * Imports only node builtins (the guest agent bundle uses it).
 */
export const FRAME_MAGIC = 0xed9e_a9e1;
export const FRAME_HEADER_BYTES = 19;
/** Largest payload a frame may carry; bigger writes are split. */
export const FRAME_MAX_PAYLOAD = 64 * 1024;

export const FrameType = {
  HELLO: 1, // host -> guest: new session epoch
  HELLO_ACK: 2, // guest -> host
  OPEN: 3, // host -> guest: a new stream (a new local connection)
  DATA: 4,
  CLOSE: 5, // either side: this stream is done (its peer ends its local connection)
  RESET: 6, // either side: unknown stream or local failure; peer destroys the stream
  PING: 7,
  PONG: 8,
} as const;
export type FrameTypeCode = (typeof FrameType)[keyof typeof FrameType];
const MAX_TYPE = 8;

export interface Frame {
  type: FrameTypeCode;
  epoch: number;
  stream: number;
  payload: Buffer;
}

function checksum(buf: Buffer, start: number): number {
  let s = 0x5a;
  for (let i = start; i < start + 17; i++) s = (s + buf[i]!) & 0xff;
  return s;
}

export function encodeFrame(type: FrameTypeCode, epoch: number, stream: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  if (payload.length > FRAME_MAX_PAYLOAD) throw new RangeError(`frame payload ${payload.length} > ${FRAME_MAX_PAYLOAD}`);
  const out = Buffer.allocUnsafe(FRAME_HEADER_BYTES + payload.length);
  out.writeUInt32BE(FRAME_MAGIC, 0);
  out.writeUInt8(type, 4);
  out.writeUInt32BE(epoch >>> 0, 5);
  out.writeUInt32BE(stream >>> 0, 9);
  out.writeUInt32BE(payload.length, 13);
  out.writeUInt8(checksum(out, 0), 17);
  // byte 18 is the checksum's complement: cheap second check against false magic hits
  out.writeUInt8(~out[17]! & 0xff, 18);
  payload.copy(out, FRAME_HEADER_BYTES);
  return out;
}

/** Splits a payload into DATA frames of at most FRAME_MAX_PAYLOAD bytes. */
export function encodeData(epoch: number, stream: number, data: Buffer): Buffer[] {
  const out: Buffer[] = [];
  for (let off = 0; off < data.length; off += FRAME_MAX_PAYLOAD) {
    out.push(encodeFrame(FrameType.DATA, epoch, stream, data.subarray(off, Math.min(data.length, off + FRAME_MAX_PAYLOAD))));
  }
  return out;
}

/** Incremental decoder with resync: push bytes, get whole frames; counts the bytes it had to skip. */
export class FrameDecoder {
  private buf: Buffer = Buffer.alloc(0);
  skippedBytes = 0;

  push(chunk: Buffer): Frame[] {
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
    const frames: Frame[] = [];
    let off = 0;
    for (;;) {
      if (this.buf.length - off < FRAME_HEADER_BYTES) break;
      if (!this.validHeader(off)) {
        const next = this.findMagic(off + 1);
        const to = next < 0 ? Math.max(off + 1, this.buf.length - 3) : next;
        this.skippedBytes += to - off;
        off = to;
        continue;
      }
      const len = this.buf.readUInt32BE(off + 13);
      if (this.buf.length - off < FRAME_HEADER_BYTES + len) break;
      frames.push({
        type: this.buf.readUInt8(off + 4) as FrameTypeCode,
        epoch: this.buf.readUInt32BE(off + 5),
        stream: this.buf.readUInt32BE(off + 9),
        payload: Buffer.from(this.buf.subarray(off + FRAME_HEADER_BYTES, off + FRAME_HEADER_BYTES + len)),
      });
      off += FRAME_HEADER_BYTES + len;
    }
    this.buf = off === 0 ? this.buf : Buffer.from(this.buf.subarray(off));
    return frames;
  }

  reset(): void {
    this.buf = Buffer.alloc(0);
  }

  private validHeader(off: number): boolean {
    const b = this.buf;
    if (b.readUInt32BE(off) !== FRAME_MAGIC) return false;
    const type = b.readUInt8(off + 4);
    if (type < 1 || type > MAX_TYPE) return false;
    if (b.readUInt32BE(off + 13) > FRAME_MAX_PAYLOAD) return false;
    const sum = checksum(b, off);
    return b.readUInt8(off + 17) === sum && b.readUInt8(off + 18) === (~sum & 0xff);
  }

  private findMagic(from: number): number {
    const m = Buffer.allocUnsafe(4);
    m.writeUInt32BE(FRAME_MAGIC, 0);
    return this.buf.indexOf(m, from);
  }
}
