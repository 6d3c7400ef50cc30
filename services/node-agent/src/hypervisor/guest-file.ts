/**
 * Reading files a guest (or its VMM, on its behalf) writes, such as the serial console log: the guest controls
 * their content and QEMU's uid may own their folder, so a read refuses a symlink put in the file's place
 * (O_NOFOLLOW), anything but a regular file (no FIFO to block on, no device), and reads only the last `maxBytes`
 * however large the file has grown (docs/security.md).
 */
import { closeSync, constants, fstatSync, openSync, readSync } from 'node:fs';

export const GUEST_FILE_MAX_BYTES = 64 * 1024;

/** The last `lines` lines of the file's last `maxBytes`; '' when it is missing, a symlink or not a regular file. */
export function guestFileTail(path: string, lines: number, maxBytes = GUEST_FILE_MAX_BYTES): string {
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK | constants.O_NOCTTY);
  } catch {
    return '';
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) return '';
    const len = Math.min(st.size, maxBytes);
    const buf = Buffer.alloc(len);
    let got = 0;
    while (got < len) {
      const n = readSync(fd, buf, got, len - got, st.size - len + got);
      if (n === 0) break;
      got += n;
    }
    return buf.subarray(0, got).toString('utf8').split('\n').slice(-lines).join('\n');
  } finally {
    closeSync(fd);
  }
}
