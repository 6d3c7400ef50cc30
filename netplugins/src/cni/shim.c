/*
 * edgenfv CNI shim: the CNI executables' fast path. A CNI runtime runs `edgenfv-<type>` per call; starting Node.js
 * for each call costs ~100 ms, so this small client hands the call (type, CNI_* / EDGENFV_* / PATH environment,
 * stdin) to a running edgenfv CNI server (the node agent, or `edgenfv-cnid`) on a unix socket and prints its answer.
 * When no server listens, it runs the Node.js bundle (edgenfv-cni.cjs beside it) itself: same code, same result.
 *
 * Request:  "EDGENFV-CNI 1\n" <type> "\n" { "KEY=VALUE" "\0" } "\0" <stdin bytes>, then shutdown(SHUT_WR)
 * Response: <exit code> "\n" <stdout bytes>, then EOF
 */
#define _GNU_SOURCE
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

extern char **environ;

static int write_all(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

static void cni_error(int code, const char *msg) {
  printf("{\"cniVersion\":\"1.0.0\",\"code\":%d,\"msg\":\"%s\"}", code, msg);
  fflush(stdout);
  exit(1);
}

static int forwarded(const char *k) {
  return strncmp(k, "CNI_", 4) == 0 || strncmp(k, "EDGENFV_", 8) == 0 || strncmp(k, "PATH=", 5) == 0;
}

static void run_node(char **argv, const char *type) {
  char self[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
  if (n <= 0) cni_error(5, "edgenfv shim: cannot find its own path");
  self[n] = 0;
  char bundle[PATH_MAX];
  snprintf(bundle, sizeof bundle, "%s/edgenfv-cni.cjs", dirname(self));
  const char *node = getenv("EDGENFV_NODE");
  char *args[] = {(char *)(node ? node : "node"), bundle, (char *)type, NULL};
  (void)argv;
  execvp(args[0], args);
  cni_error(5, "edgenfv shim: no CNI server listening and node could not be started");
}

int main(int argc, char **argv) {
  (void)argc;
  char *name = basename(argv[0]);
  const char *type = strncmp(name, "edgenfv-", 8) == 0 ? name + 8 : name;
  const char *path = getenv("EDGENFV_CNI_SOCKET");
  if (!path || !*path) path = "/run/edgenfv/cni.sock";

  int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  if (s < 0 || strlen(path) >= sizeof addr.sun_path) run_node(argv, type);
  strcpy(addr.sun_path, path);
  if (connect(s, (struct sockaddr *)&addr, sizeof addr) != 0) {
    close(s);
    run_node(argv, type); /* no server: the Node.js bundle does the work */
  }

  char head[256];
  int hn = snprintf(head, sizeof head, "EDGENFV-CNI 1\n%s\n", type);
  if (hn <= 0 || (size_t)hn >= sizeof head || write_all(s, head, (size_t)hn) != 0) cni_error(5, "edgenfv shim: write to CNI server failed");
  for (char **e = environ; *e; e++)
    if (forwarded(*e) && write_all(s, *e, strlen(*e) + 1) != 0) cni_error(5, "edgenfv shim: write to CNI server failed");
  if (write_all(s, "", 1) != 0) cni_error(5, "edgenfv shim: write to CNI server failed");

  const char *cmd = getenv("CNI_COMMAND");
  if (!(cmd && strcmp(cmd, "VERSION") == 0 && isatty(0))) {
    char buf[65536];
    for (;;) {
      ssize_t r = read(0, buf, sizeof buf);
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) break;
      if (write_all(s, buf, (size_t)r) != 0) cni_error(5, "edgenfv shim: write to CNI server failed");
    }
  }
  shutdown(s, SHUT_WR);

  /* first line: exit code; then the result/error JSON */
  char buf[65536];
  int code = -1;
  size_t have = 0;
  for (;;) {
    ssize_t r = read(s, buf + have, sizeof buf - have);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    have += (size_t)r;
    if (code < 0) {
      char *nl = memchr(buf, '\n', have);
      if (!nl) {
        if (have == sizeof buf) break;
        continue;
      }
      *nl = 0;
      code = atoi(buf);
      size_t rest = have - (size_t)(nl + 1 - buf);
      if (write_all(1, nl + 1, rest) != 0) return 1;
    } else if (write_all(1, buf, have) != 0) {
      return 1;
    }
    have = 0;
  }
  if (code < 0) cni_error(11, "edgenfv shim: the CNI server closed the connection without an answer: try again");
  return code;
}
