/* The data-path loop bench/datapath.sh times in containers and bench/idmap.c times on bare
 * overlays: one definition, so the two benchmarks' figures are of the same loop. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static char buf[4096];

static void die(const char *what) { perror(what); exit(1); }

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e9 + t.tv_nsec;
}

/* rw: open + 4 KiB pwrite + 4 KiB pread + close of a file in the root filesystem. */
static void rw(long n) {
    for (long i = 0; i < n; i++) {
        int fd = open("/tmp/dp.dat", O_RDWR | O_CREAT | O_CLOEXEC, 0600);
        if (fd < 0) die("open /tmp/dp.dat");
        if (pwrite(fd, buf, sizeof buf, 0) != sizeof buf) die("pwrite");
        if (pread(fd, buf, sizeof buf, 0) != sizeof buf) die("pread");
        close(fd);
    }
}
