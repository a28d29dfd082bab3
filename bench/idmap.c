/* The kernel's own cost of the container rootfs's shape under eci, without docker or eci
 * (bench/idmap.sh builds and runs this; see there). Three overlays of identical layer trees,
 * each with a worker process chrooted into it running the rw loop of bench/rwloop.h (the
 * one bench/datapath.sh times in containers):
 *   plain   plain layers, the worker VM root (runc's rootfs and process)
 *   chown   layers chowned to 100000, the worker root of a user namespace mapping 0 to 100000
 *           (a user namespace without idmapped mounts)
 *   idmap   plain layers attached as idmapped mounts (0 -> 100000), the worker root of that
 *           user namespace (eci's rootfs and process)
 * The two container overlays are made by VM root with file-system ids 100000, as eci-runc
 * makes its overlay. Each tree holds one lower layer with tmp/ and the upper the loop writes
 * to (only / and /tmp are walked, and the file lives in the upper).
 * Usage: idmap WORKDIR N BATCHES; prints one line per batch: "<mode> <batch> <ns per loop>". */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/fsuid.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <linux/capability.h>
#include <linux/mount.h>

#include "rwloop.h"

static void mkdirs(const char *base, const char *name, uid_t id) {
    char p[4096];
    snprintf(p, sizeof p, "%s/%s", base, name);
    if (mkdir(p, 0755) && errno != EEXIST) die(p);
    if (chown(p, id, id)) die(p);
}

/* One set of layer folders: lower (with tmp/), upper, work, merged. */
static void layers(const char *w, const char *set, uid_t id) {
    char d[4096];
    snprintf(d, sizeof d, "%s/%s", w, set);
    mkdirs(w, set, 0);
    mkdirs(d, "lower", id);
    mkdirs(d, "lower/tmp", id);
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s/lower/tmp", d);
    if (chmod(tmp, 01777)) die(tmp);
    mkdirs(d, "upper", id);
    mkdirs(d, "work", id);
    mkdirs(d, "merged", 0);
    mkdirs(d, "attach", 0);
}

static void overlay(const char *w, const char *set, const char *lower, const char *upper,
                    const char *work) {
    char target[4096], opts[8192];
    snprintf(target, sizeof target, "%s/%s/merged", w, set);
    snprintf(opts, sizeof opts, "lowerdir=%s,upperdir=%s,workdir=%s,index=off", lower, upper, work);
    if (mount("overlay", target, "overlay", 0, opts)) die(target);
}

/* A user namespace mapping 0..65535 to 100000..: its fd (the process holding it is killed). */
static int userns(void) {
    int p[2];
    if (pipe(p)) die("pipe");
    pid_t c = fork();
    if (c < 0) die("fork");
    if (c == 0) {
        if (unshare(CLONE_NEWUSER)) die("unshare user");
        char x;
        close(p[1]);
        if (read(p[0], &x, 1) < 0) die("read");
        _exit(0);
    }
    char path[64], ns_path[64], self[64], own[64];
    snprintf(ns_path, sizeof ns_path, "/proc/%d/ns/user", c);
    /* Wait for the child's unshare. */
    for (int i = 0;; i++) {
        ssize_t a = readlink(ns_path, path, sizeof path), b = readlink("/proc/self/ns/user", own, sizeof own);
        if (a > 0 && b > 0 && (a != b || memcmp(path, own, a))) break;
        if (i > 10000) die("the child's user namespace");
        usleep(100);
    }
    const char *maps[] = {"uid_map", "gid_map"};
    for (int i = 0; i < 2; i++) {
        snprintf(self, sizeof self, "/proc/%d/%s", c, maps[i]);
        int fd = open(self, O_WRONLY);
        if (fd < 0 || write(fd, "0 100000 65536\n", 15) != 15) die(self);
        close(fd);
    }
    snprintf(path, sizeof path, "/proc/%d/ns/user", c);
    int ns = open(path, O_RDONLY | O_CLOEXEC);
    if (ns < 0) die(path);
    close(p[1]);
    waitpid(c, NULL, 0);
    return ns;
}

/* `path` attached idmapped through `ns` at `at`. */
static void idmapped(const char *path, int ns, const char *at) {
    int fd = syscall(SYS_open_tree, AT_FDCWD, path, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
    if (fd < 0) die("open_tree");
    struct mount_attr a = {.attr_set = MOUNT_ATTR_IDMAP, .userns_fd = ns};
    if (syscall(SYS_mount_setattr, fd, "", AT_EMPTY_PATH, &a, sizeof a)) die("mount_setattr idmap");
    if (syscall(SYS_move_mount, fd, "", AT_FDCWD, at, MOVE_MOUNT_F_EMPTY_PATH)) die("move_mount");
    close(fd);
}

/* File-system ids `id` with VM root's capabilities kept, as eci-runc's overlay helper has
 * them (sys::set_fs_ids): an id other than 0 clears the file capabilities from the effective
 * set, which this takes back. */
static void fs_ids(uid_t id) {
    setfsgid(id);
    setfsuid(id);
    if ((uid_t)setfsuid(-1) != id || (gid_t)setfsgid(-1) != id) {
        fprintf(stderr, "setfsuid/setfsgid %u did not take effect\n", id);
        exit(1);
    }
    struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct caps[2];
    if (syscall(SYS_capget, &h, caps)) die("capget");
    caps[0].effective = caps[0].permitted;
    caps[1].effective = caps[1].permitted;
    if (syscall(SYS_capset, &h, caps)) die("capset");
}

struct worker { const char *mode; int in, out; };

static struct worker start(const char *w, const char *set, int ns) {
    int to[2], from[2];
    if (pipe(to) || pipe(from)) die("pipe");
    pid_t c = fork();
    if (c < 0) die("fork");
    if (c == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        close(to[1]);
        close(from[0]);
        char root[4096];
        snprintf(root, sizeof root, "%s/%s/merged", w, set);
        if (chroot(root) || chdir("/")) die("chroot");
        if (ns >= 0) {
            if (setns(ns, CLONE_NEWUSER)) die("setns");
            /* A container's root: no supplementary groups of VM root's. */
            if (setgroups(0, NULL) || setresgid(0, 0, 0) || setresuid(0, 0, 0)) die("setresuid");
        }
        FILE *in = fdopen(to[0], "r"), *out = fdopen(from[1], "w");
        char line[64];
        while (fgets(line, sizeof line, in)) {
            long n = atol(line);
            double a = now();
            rw(n);
            fprintf(out, "%.1f\n", (now() - a) / n);
            fflush(out);
        }
        _exit(0);
    }
    close(to[0]);
    close(from[1]);
    return (struct worker){set, to[1], from[0]};
}

static double batch(struct worker *k, long n) {
    char line[64];
    int len = snprintf(line, sizeof line, "%ld\n", n);
    if (write(k->in, line, len) != len) die("write to worker");
    ssize_t got = 0;
    while (got == 0 || line[got - 1] != '\n') {
        ssize_t r = read(k->out, line + got, sizeof line - 1 - got);
        if (r <= 0) {
            fprintf(stderr, "the %s worker gave no figure\n", k->mode);
            exit(1);
        }
        got += r;
    }
    line[got] = 0;
    return atof(line);
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s WORKDIR N BATCHES\n", argv[0]);
        return 2;
    }
    memset(buf, 'x', sizeof buf);
    const char *w = argv[1];
    long n = atol(argv[2]), batches = atol(argv[3]);
    /* Every mount stays in this process's own mount namespace. */
    if (unshare(CLONE_NEWNS) || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL)) die("mount namespace");
    layers(w, "plain", 0);
    layers(w, "chown", 100000);
    layers(w, "idmap", 0);
    char l[4096], u[4096], k[4096], at[4096];
    snprintf(l, sizeof l, "%s/plain/lower", w);
    snprintf(u, sizeof u, "%s/plain/upper", w);
    snprintf(k, sizeof k, "%s/plain/work", w);
    overlay(w, "plain", l, u, k);
    /* Overlay checks the layers' files with its mounter's credentials. The two overlays of
     * container-owned files are made with container root's file-system ids, as eci-runc
     * makes its overlay: made with 0, every open of a file owned by 100000 would take the
     * capability path (CAP_DAC_OVERRIDE, CAP_FOWNER) instead of the owner's. */
    fs_ids(100000);
    snprintf(l, sizeof l, "%s/chown/lower", w);
    snprintf(u, sizeof u, "%s/chown/upper", w);
    snprintf(k, sizeof k, "%s/chown/work", w);
    overlay(w, "chown", l, u, k);
    fs_ids(0);
    int ns = userns();
    /* eci-runc's shape: each layer an idmapped mount, the folder holding upper and work one
     * more. */
    snprintf(l, sizeof l, "%s/idmap/lower", w);
    snprintf(at, sizeof at, "%s/idmap/attach", w);
    mkdirs(at, "l0", 0);
    mkdirs(at, "u", 0);
    strcat(at, "/l0");
    idmapped(l, ns, at);
    snprintf(l, sizeof l, "%s/idmap", w);
    snprintf(at, sizeof at, "%s/idmap/attach/u", w);
    idmapped(l, ns, at);
    snprintf(l, sizeof l, "%s/idmap/attach/l0", w);
    snprintf(u, sizeof u, "%s/idmap/attach/u/upper", w);
    snprintf(k, sizeof k, "%s/idmap/attach/u/work", w);
    fs_ids(100000);
    overlay(w, "idmap", l, u, k);
    fs_ids(0);

    struct worker ws[3] = {start(w, "plain", -1), start(w, "chown", ns), start(w, "idmap", ns)};
    for (int i = 0; i < 3; i++) batch(&ws[i], n); /* warm-up: the file exists in each upper */
    for (long b = 0; b < batches; b++)
        for (int j = 0; j < 3; j++) {
            /* The order turns every batch, so each mode goes first, second and third alike. */
            struct worker *k = &ws[(b + j) % 3];
            printf("%s %ld %.1f\n", k->mode, b, batch(k, n));
        }
    return 0;
}
