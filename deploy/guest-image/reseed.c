/*
 * edgenfv-reseed <unix-ms> < entropy: run by the guest agent's Reidentify after a snapshot restore
 * (services/guest-agent/src/identity.ts). Mixes stdin's bytes (32..512, the host's entropy) into the kernel's input
 * pool and credits them (RNDADDENTROPY), reseeds the kernel's CRNG from the pool now (RNDRESEEDCRNG: otherwise it
 * keeps the template's key until its next scheduled reseed), and sets CLOCK_REALTIME to <unix-ms>.
 * Built by the image builder with the host's cc, linked against the libc the image carries for node.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/random.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#define MAX_BYTES 512

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: edgenfv-reseed <unix-ms> < entropy\n");
    return 2;
  }
  char *end;
  errno = 0;
  long long ms = strtoll(argv[1], &end, 10);
  if (errno || *end || ms <= 0) {
    fprintf(stderr, "edgenfv-reseed: bad time %s\n", argv[1]);
    return 2;
  }
  struct rand_pool_info *info = calloc(1, sizeof(*info) + MAX_BYTES);
  if (!info) return 1;
  unsigned char *buf = (unsigned char *)info->buf;
  size_t n = 0;
  for (;;) {
    ssize_t r = read(0, buf + n, MAX_BYTES - n);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    n += (size_t)r;
    if (n == MAX_BYTES) break;
  }
  if (n < 32) {
    fprintf(stderr, "edgenfv-reseed: %zu bytes of entropy on stdin, need 32..%d\n", n, MAX_BYTES);
    return 2;
  }
  int fd = open("/dev/urandom", O_WRONLY | O_CLOEXEC);
  if (fd < 0) {
    perror("edgenfv-reseed: /dev/urandom");
    return 1;
  }
  info->entropy_count = (int)(n * 8);
  info->buf_size = (int)n;
  if (ioctl(fd, RNDADDENTROPY, info) < 0) {
    perror("edgenfv-reseed: RNDADDENTROPY");
    return 1;
  }
  if (ioctl(fd, RNDRESEEDCRNG) < 0) {
    perror("edgenfv-reseed: RNDRESEEDCRNG");
    return 1;
  }
  memset(buf, 0, MAX_BYTES);
  close(fd);
  struct timespec ts = {.tv_sec = (time_t)(ms / 1000), .tv_nsec = (long)(ms % 1000) * 1000000L};
  if (clock_settime(CLOCK_REALTIME, &ts) < 0) {
    perror("edgenfv-reseed: clock_settime");
    return 1;
  }
  return 0;
}
