/*
 * virtainer guest init: PID 1 of a `--runtime=virtainer` VM. Static, needs nothing from the image.
 *
 * Boot: load the modules listed in /lib/modules/load-order, mount the image's root filesystem
 * (virtiofs tag "rootfs") with /proc, /sys, /dev, /dev/pts, /dev/shm inside it, move it to / and
 * run the OCI process from /virtainer/config (appended to the initramfs by the launcher: NUL
 * separated "key\0value\0" pairs; keys arg, env, cwd, uid, gid, group, hostname, terminal, stdin,
 * rows, cols, onlcr, debug, net-* (one group per NIC, each from its net-mac), disk-* (one group
 * per data disk, each from its disk-serial), hostlink, relay, dns-proxy, dns-upstream).
 *
 * Data disks: the virtio disk whose serial is disk-serial is mounted at disk-mount (disk-fs) in
 * the image's root, before the process starts.
 * Relays: "relay ADDR PORT" makes init listen on ADDR:PORT (TCP) in the guest and carry each
 * connection to hostlink:PORT, the launcher's own address on the container side of the VM's
 * network (a /32 reached through eth0): VNC (QEMU listens in the container, where -p cannot
 * reach once the VM has the container's address) and DNS over TCP to Docker's resolver.
 *
 * Ports (virtio-serial, found by name in /sys/class/virtio-ports):
 *   virtainer.stdout / virtainer.stderr  the process's output, relayed from pipes (or the pty)
 *   virtainer.stdin                      relayed into the process's stdin (when stdin=1)
 *   virtainer.control                    lines; host->guest "signal N", "winsize ROWS COLS", "ack",
 *                                        "stdin-eof N" (stdin ended after N bytes: the port stays
 *                                        open, since QEMU drops unread bytes when a socket closes);
 *                                        guest->host "exit STATUS OUT_BYTES ERR_BYTES", and with
 *                                        debug=1 "stage MS WHAT": the guest's clock (ms since its
 *                                        kernel started) at each step of the boot
 *   DNS (dns-proxy=1: the container's resolv.conf names Docker's embedded resolver 127.0.0.11,
 *   which lives in the container's network namespace, not the VM's): init answers on
 *   127.0.0.11:53/udp in the guest and carries each query over the control port, guest->host
 *   "dns ID HEX", host->guest "dnsr ID HEX"; the launcher asks 127.0.0.11 in the container. When
 *   Docker's resolver has no answer (it forwards other names from the container's namespace,
 *   where nothing comes back), host->guest "dnsfail ID": init asks the dns-upstream servers.
 * STATUS is the exit code, or 128+N when the process died of signal N. The host acknowledges once
 * it has received OUT_BYTES and ERR_BYTES, so nothing written before exit is lost; then (or after
 * a deadline) init syncs and powers off.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/reboot.h>
#include <net/if.h>
#include <arpa/inet.h>
#include <linux/route.h>
#include <linux/ipv6_route.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#define MAX_ITEMS 4096
#define MAX_NICS 8
#define MAX_ADDR6 4 /* IPv6 addresses per NIC */
#define MAX_DISKS 16
#define MAX_RELAYS 4
#define MAX_UPSTREAMS 3
#define ACK_DEADLINE_MS 10000
#define DRAIN_DEADLINE_MS 5000

static int debug;

static void logmsg(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "virtainer-init: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
}

static void poweroff(void) {
    sync();
    reboot(LINUX_REBOOT_CMD_POWER_OFF);
    for (;;) pause();
}

static void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "virtainer-init: fatal: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    poweroff();
}

static long now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

/* ---- configuration -------------------------------------------------------------------------- */

struct config {
    char *args[MAX_ITEMS];
    int nargs;
    char *env[MAX_ITEMS];
    int nenv;
    gid_t groups[256];
    int ngroups;
    const char *cwd, *hostname;
    uid_t uid;
    gid_t gid;
    int terminal, with_stdin;
    int onlcr;             /* the pty maps \n to \r\n (unless the host side's terminal does it) */
    int dns_proxy;
    unsigned short rows, cols;
    /* network: eth0, eth1... in this order, each found by its MAC */
    struct nic {
        const char *mac, *addr, *gateway; int prefix, mtu;
        const char *addr6[MAX_ADDR6], *gateway6; int naddr6; /* addr6: "address/prefix" */
    } nics[MAX_NICS];
    int nnics;
    struct disk { const char *serial, *fs, *mount; } disks[MAX_DISKS];
    int ndisks;
    const char *hostlink;
    struct relay { char addr[64]; int port; } relays[MAX_RELAYS];
    int nrelays;
    const char *upstreams[MAX_UPSTREAMS]; /* the DNS servers Docker's resolver forwards to */
    int nupstreams;
};

static char *slurp(const char *path, size_t *size) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return NULL;
    size_t cap = 65536, len = 0;
    char *buf = malloc(cap + 1);
    for (;;) {
        if (len == cap) buf = realloc(buf, (cap *= 2) + 1);
        ssize_t n = read(fd, buf + len, cap - len);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        len += (size_t)n;
    }
    close(fd);
    buf[len] = 0;
    *size = len;
    return buf;
}

static void parse_config(struct config *c, char *buf, size_t size) {
    memset(c, 0, sizeof(*c));
    c->cwd = "/";
    c->onlcr = 1;
    char *p = buf, *end = buf + size;
    while (p < end) {
        char *key = p;
        p += strlen(p) + 1;
        if (p >= end) break;
        char *value = p;
        p += strlen(p) + 1;
        if (!strcmp(key, "arg") && c->nargs < MAX_ITEMS - 1) c->args[c->nargs++] = value;
        else if (!strcmp(key, "env") && c->nenv < MAX_ITEMS - 1) c->env[c->nenv++] = value;
        else if (!strcmp(key, "cwd")) c->cwd = value;
        else if (!strcmp(key, "uid")) c->uid = (uid_t)strtoul(value, NULL, 10);
        else if (!strcmp(key, "gid")) c->gid = (gid_t)strtoul(value, NULL, 10);
        else if (!strcmp(key, "group") && c->ngroups < 256) c->groups[c->ngroups++] = (gid_t)strtoul(value, NULL, 10);
        else if (!strcmp(key, "hostname")) c->hostname = value;
        else if (!strcmp(key, "terminal")) c->terminal = atoi(value);
        else if (!strcmp(key, "stdin")) c->with_stdin = atoi(value);
        else if (!strcmp(key, "rows")) c->rows = (unsigned short)atoi(value);
        else if (!strcmp(key, "cols")) c->cols = (unsigned short)atoi(value);
        else if (!strcmp(key, "debug")) debug = atoi(value);
        else if (!strcmp(key, "net-mac") && c->nnics < MAX_NICS) c->nics[c->nnics++].mac = value;
        else if (!strncmp(key, "net-", 4) && c->nnics > 0) {
            struct nic *nic = &c->nics[c->nnics - 1];
            if (!strcmp(key, "net-addr")) nic->addr = value;
            else if (!strcmp(key, "net-prefix")) nic->prefix = atoi(value);
            else if (!strcmp(key, "net-gateway")) nic->gateway = value;
            else if (!strcmp(key, "net-mtu")) nic->mtu = atoi(value);
            else if (!strcmp(key, "net-addr6") && nic->naddr6 < MAX_ADDR6) nic->addr6[nic->naddr6++] = value;
            else if (!strcmp(key, "net-gateway6")) nic->gateway6 = value;
        }
        else if (!strcmp(key, "disk-serial") && c->ndisks < MAX_DISKS) c->disks[c->ndisks++].serial = value;
        else if (!strcmp(key, "disk-fs") && c->ndisks > 0) c->disks[c->ndisks - 1].fs = value;
        else if (!strcmp(key, "disk-mount") && c->ndisks > 0) c->disks[c->ndisks - 1].mount = value;
        else if (!strcmp(key, "hostlink")) c->hostlink = value;
        else if (!strcmp(key, "dns-upstream") && c->nupstreams < MAX_UPSTREAMS) c->upstreams[c->nupstreams++] = value;
        else if (!strcmp(key, "relay") && c->nrelays < MAX_RELAYS) {
            struct relay *r = &c->relays[c->nrelays];
            if (sscanf(value, "%63s %d", r->addr, &r->port) == 2) c->nrelays++;
        }
        else if (!strcmp(key, "onlcr")) c->onlcr = atoi(value);
        else if (!strcmp(key, "dns-proxy")) c->dns_proxy = atoi(value);
    }
    c->args[c->nargs] = NULL;
    c->env[c->nenv] = NULL;
}

static void read_config(struct config *c) {
    size_t size;
    char *buf = slurp("/virtainer/config", &size);
    if (!buf) die("no /virtainer/config in the initramfs");
    parse_config(c, buf, size);
    if (c->nargs == 0) die("the configuration has no command");
}

/* ---- boot ----------------------------------------------------------------------------------- */

static void mount_or_die(const char *src, const char *dst, const char *type, unsigned long flags, const char *data) {
    mkdir(dst, 0755);
    if (mount(src, dst, type, flags, data) < 0) die("mount %s on %s: %s", type, dst, strerror(errno));
}

static void load_modules(void) {
    size_t size;
    char *list = slurp("/lib/modules/load-order", &size);
    if (!list) return;
    for (char *line = strtok(list, "\n"); line; line = strtok(NULL, "\n")) {
        int fd = open(line, O_RDONLY | O_CLOEXEC);
        if (fd < 0) { logmsg("module %s: %s", line, strerror(errno)); continue; }
        if (syscall(SYS_finit_module, fd, "", 0) < 0 && errno != EEXIST) logmsg("module %s: %s", line, strerror(errno));
        close(fd);
    }
}

/* /dev/vportNpM whose /sys/class/virtio-ports/vportNpM/name is `name`, or -1 */
static int open_port(const char *name, int flags) {
    DIR *dir = opendir("/sys/class/virtio-ports");
    if (!dir) return -1;
    struct dirent *entry;
    int fd = -1;
    while ((entry = readdir(dir)) && fd < 0) {
        if (entry->d_name[0] == '.') continue;
        char path[300], value[128] = {0};
        snprintf(path, sizeof path, "/sys/class/virtio-ports/%s/name", entry->d_name);
        int nfd = open(path, O_RDONLY | O_CLOEXEC);
        if (nfd < 0) continue;
        ssize_t n = read(nfd, value, sizeof value - 1);
        close(nfd);
        if (n > 0 && value[n - 1] == '\n') value[n - 1] = 0;
        if (strcmp(value, name)) continue;
        snprintf(path, sizeof path, "/dev/%s", entry->d_name);
        fd = open(path, flags | O_CLOEXEC);
        if (fd < 0) logmsg("open %s: %s", path, strerror(errno));
    }
    closedir(dir);
    return fd;
}

static int wait_port(const char *name, int flags) {
    long deadline = now_ms() + 10000;
    for (;;) {
        int fd = open_port(name, flags);
        if (fd >= 0) return fd;
        if (now_ms() > deadline) die("no virtio port %s", name);
        usleep(10000);
    }
}

static void mount_root(void) {
    mkdir("/newroot", 0755);
    long deadline = now_ms() + 10000;
    while (mount("rootfs", "/newroot", "virtiofs", 0, NULL) < 0) {
        if (now_ms() > deadline) die("mount the image's root filesystem (virtiofs): %s", strerror(errno));
        usleep(10000);
    }
    /* what runc gives every container */
    mount_or_die("proc", "/newroot/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
    mount_or_die("sysfs", "/newroot/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
    mount_or_die("devtmpfs", "/newroot/dev", "devtmpfs", MS_NOSUID, "mode=0755");
    mount_or_die("devpts", "/newroot/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620,gid=5");
    mount_or_die("shm", "/newroot/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=1777,size=65536k");
    mount_or_die("mqueue", "/newroot/dev/mqueue", "mqueue", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
    unlink("/newroot/dev/ptmx");
    if (symlink("pts/ptmx", "/newroot/dev/ptmx") < 0) logmsg("ptmx: %s", strerror(errno));
    /* switch_root: the image's root becomes / for init and everything it starts */
    if (chdir("/newroot") < 0 || mount(".", "/", NULL, MS_MOVE, NULL) < 0 || chroot(".") < 0 || chdir("/") < 0)
        die("switch to the image's root: %s", strerror(errno));
}

static void if_up(int sock, const char *name, int mtu) {
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
    if (mtu > 0) {
        ifr.ifr_mtu = mtu;
        if (ioctl(sock, SIOCSIFMTU, &ifr) < 0) logmsg("%s mtu: %s", name, strerror(errno));
    }
    if (ioctl(sock, SIOCGIFFLAGS, &ifr) < 0) { logmsg("%s: %s", name, strerror(errno)); return; }
    ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
    if (ioctl(sock, SIOCSIFFLAGS, &ifr) < 0) logmsg("%s up: %s", name, strerror(errno));
}

/* the entry of sysfs directory `dir` whose file `attr` holds `value` (waiting for it to appear) */
static int find_in_sysfs(const char *dir, const char *attr, const char *value, char *name, size_t size) {
    long deadline = now_ms() + 10000;
    while (now_ms() < deadline) {
        DIR *d = opendir(dir);
        struct dirent *entry;
        while (d && (entry = readdir(d))) {
            char path[600], text[64] = {0};
            snprintf(path, sizeof path, "%s/%s/%s", dir, entry->d_name, attr);
            int fd = open(path, O_RDONLY | O_CLOEXEC);
            if (fd < 0) continue;
            ssize_t n = read(fd, text, sizeof text - 1);
            close(fd);
            if (n > 0 && text[n - 1] == '\n') text[n - 1] = 0;
            if (n > 0 && !strcasecmp(text, value)) {
                snprintf(name, size, "%s", entry->d_name);
                closedir(d);
                return 0;
            }
        }
        if (d) closedir(d);
        usleep(10000);
    }
    return -1;
}

static void set_ipv4(int sock, const char *name, unsigned long request, const char *addr, uint32_t raw) {
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
    struct sockaddr_in *sin = (struct sockaddr_in *)&ifr.ifr_addr; /* ifr_netmask shares it */
    sin->sin_family = AF_INET;
    if (addr) inet_pton(AF_INET, addr, &sin->sin_addr);
    else sin->sin_addr.s_addr = raw;
    if (ioctl(sock, request, &ifr) < 0) logmsg("%s %s: %s", name, addr ? addr : "netmask", strerror(errno));
}

/* a route to dst/prefix (0.0.0.0/0: the default route) via gateway, or on dev without one */
static void add_route(int sock, const char *dst, int prefix, const char *gateway, char *dev) {
    struct rtentry route;
    memset(&route, 0, sizeof route);
    struct sockaddr_in *sin = (struct sockaddr_in *)&route.rt_dst;
    sin->sin_family = AF_INET;
    inet_pton(AF_INET, dst, &sin->sin_addr);
    sin = (struct sockaddr_in *)&route.rt_genmask;
    sin->sin_family = AF_INET;
    sin->sin_addr.s_addr = prefix ? htonl(0xffffffffu << (32 - prefix)) : 0;
    route.rt_flags = RTF_UP | (prefix == 32 ? RTF_HOST : 0);
    if (gateway) {
        sin = (struct sockaddr_in *)&route.rt_gateway;
        sin->sin_family = AF_INET;
        inet_pton(AF_INET, gateway, &sin->sin_addr);
        route.rt_flags |= RTF_GATEWAY;
    }
    route.rt_dev = dev;
    if (ioctl(sock, SIOCADDRT, &route) < 0) logmsg("route to %s/%d: %s", dst, prefix, strerror(errno));
}

/* the kernel's struct in6_ifreq (linux/ipv6.h clashes with libc's netinet/in.h) */
struct in6_ifreq_ { struct in6_addr addr; uint32_t prefixlen; int ifindex; };

/* the NIC's IPv6 addresses as Docker set them (no duplicate address detection: Docker's NODAD) and
   the default route via gateway6; the kernel adds each address's prefix route itself */
static void setup_ipv6(const char *name, const struct nic *nic) {
    char path[128];
    snprintf(path, sizeof path, "/proc/sys/net/ipv6/conf/%s/accept_dad", name);
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) { logmsg("%s: no IPv6 (%s)", name, strerror(errno)); return; }
    if (write(fd, "0", 1) < 0) logmsg("%s accept_dad: %s", name, strerror(errno));
    close(fd);
    int sock = socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (sock < 0) { logmsg("IPv6 socket: %s", strerror(errno)); return; }
    int index = (int)if_nametoindex(name);
    for (int i = 0; i < nic->naddr6; i++) {
        char text[64];
        snprintf(text, sizeof text, "%s", nic->addr6[i]);
        char *slash = strchr(text, '/');
        struct in6_ifreq_ request = { .prefixlen = slash ? (uint32_t)atoi(slash + 1) : 128, .ifindex = index };
        if (slash) *slash = 0;
        if (inet_pton(AF_INET6, text, &request.addr) != 1 || ioctl(sock, SIOCSIFADDR, &request) < 0)
            logmsg("%s %s: %s", name, nic->addr6[i], strerror(errno));
    }
    if (nic->gateway6 && *nic->gateway6) {
        struct in6_rtmsg route;
        memset(&route, 0, sizeof route);
        route.rtmsg_flags = RTF_UP | RTF_GATEWAY;
        route.rtmsg_metric = 1024; /* what `ip -6 route add` gives, as in the container */
        route.rtmsg_ifindex = index;
        if (inet_pton(AF_INET6, nic->gateway6, &route.rtmsg_gateway) != 1 || ioctl(sock, SIOCADDRT, &route) < 0)
            logmsg("IPv6 default route via %s: %s", nic->gateway6, strerror(errno));
    }
    close(sock);
}

static void rename_nic(int sock, const char *from, const char *to) {
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    strncpy(ifr.ifr_name, from, IFNAMSIZ - 1);
    strncpy(ifr.ifr_newname, to, IFNAMSIZ - 1);
    if (ioctl(sock, SIOCSIFNAME, &ifr) < 0) logmsg("rename %s to %s: %s", from, to, strerror(errno));
}

/* each NIC named as the container's were (eth0, eth1... in the plan's order), with its address */
static void setup_network(const struct config *c) {
    int sock = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (sock < 0) return;
    if_up(sock, "lo", 0);
    char names[MAX_NICS][IFNAMSIZ];
    int found[MAX_NICS] = {0};
    for (int i = 0; i < c->nnics; i++) { /* first aside, so that no final name is taken yet */
        char name[IFNAMSIZ];
        if (!c->nics[i].mac || find_in_sysfs("/sys/class/net", "address", c->nics[i].mac, name, sizeof name) < 0) { logmsg("no NIC with MAC %s", c->nics[i].mac); continue; }
        snprintf(names[i], IFNAMSIZ, "vtnet%d", i);
        rename_nic(sock, name, names[i]);
        found[i] = 1;
    }
    for (int i = 0; i < c->nnics; i++) {
        if (!found[i]) continue;
        char final[IFNAMSIZ];
        snprintf(final, sizeof final, "eth%d", i);
        rename_nic(sock, names[i], final);
        const struct nic *nic = &c->nics[i];
        if (!nic->addr) continue;
        set_ipv4(sock, final, SIOCSIFADDR, nic->addr, 0);
        set_ipv4(sock, final, SIOCSIFNETMASK, NULL, nic->prefix ? htonl(0xffffffffu << (32 - nic->prefix)) : 0);
        if_up(sock, final, nic->mtu);
        if (nic->gateway && *nic->gateway) add_route(sock, "0.0.0.0", 0, nic->gateway, final);
        if (nic->naddr6) setup_ipv6(final, nic);
    }
    if (c->hostlink && c->nnics > 0 && found[0]) add_route(sock, c->hostlink, 32, NULL, "eth0");
    close(sock);
}

/* ---- data disks ----------------------------------------------------------------------------- */

static void make_dirs(const char *path) {
    char copy[4096];
    snprintf(copy, sizeof copy, "%s", path);
    for (char *p = copy + 1; *p; p++)
        if (*p == '/') { *p = 0; mkdir(copy, 0755); *p = '/'; }
    mkdir(copy, 0755);
}

static void mount_disks(const struct config *c) {
    for (int i = 0; i < c->ndisks; i++) {
        const struct disk *d = &c->disks[i];
        char name[256], dev[300];
        if (!d->serial || !d->fs || !d->mount) continue;
        if (find_in_sysfs("/sys/block", "serial", d->serial, name, sizeof name) < 0) die("no data disk with serial %s", d->serial);
        snprintf(dev, sizeof dev, "/dev/%s", name);
        make_dirs(d->mount);
        if (mount(dev, d->mount, d->fs, 0, NULL) < 0) die("mount %s (%s) on %s: %s", dev, d->fs, d->mount, strerror(errno));
    }
}

/* ---- the process ---------------------------------------------------------------------------- */

static const char *env_value(char *const env[], const char *name) {
    size_t len = strlen(name);
    for (int i = 0; env[i]; i++)
        if (!strncmp(env[i], name, len) && env[i][len] == '=') return env[i] + len + 1;
    return NULL;
}

/* execve with a PATH search in the process's own environment (as runc does) */
static void exec_command(char *const args[], char *const env[]) {
    if (strchr(args[0], '/')) {
        execve(args[0], args, env);
        return;
    }
    const char *path = env_value(env, "PATH");
    if (!path) path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
    char *copy = strdup(path), *save = NULL;
    int saw_eacces = 0;
    for (char *dir = strtok_r(copy, ":", &save); dir; dir = strtok_r(NULL, ":", &save)) {
        char full[4096];
        snprintf(full, sizeof full, "%s/%s", *dir ? dir : ".", args[0]);
        execve(full, args, env);
        if (errno == EACCES) saw_eacces = 1;
    }
    errno = saw_eacces ? EACCES : ENOENT;
}

static void child_setup(const struct config *c, int in, int out, int err, int tty) {
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    for (int s = 1; s < NSIG; s++) signal(s, SIG_DFL);
    setsid();
    if (tty >= 0 && ioctl(tty, TIOCSCTTY, 0) < 0) logmsg("controlling terminal: %s", strerror(errno));
    if (dup2(in, 0) < 0 || dup2(out, 1) < 0 || dup2(err, 2) < 0) _exit(126);
    if (setgroups((size_t)c->ngroups, c->groups) < 0 || setgid(c->gid) < 0 || setuid(c->uid) < 0) {
        fprintf(stderr, "virtainer: cannot become uid %u gid %u: %s\n", c->uid, c->gid, strerror(errno));
        _exit(126);
    }
    if (chdir(c->cwd) < 0) {
        fprintf(stderr, "virtainer: cannot change to the working directory %s: %s\n", c->cwd, strerror(errno));
        _exit(126);
    }
    exec_command(c->args, c->env);
    int code = errno == ENOENT ? 127 : 126;
    fprintf(stderr, "virtainer: exec: \"%s\": %s\n", c->args[0],
            errno == ENOENT ? "executable file not found in $PATH" : strerror(errno));
    _exit(code);
}

/* ---- relaying ------------------------------------------------------------------------------- */

static int write_all(int fd, const char *buf, size_t len) {
    while (len) {
        ssize_t n = write(fd, buf, len);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return -1;
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

/* ---- relays: a guest TCP port carried to the launcher (see the top) ------------------------ */

/* both directions until both ended: an end that stops sending (DNS over TCP's client, after its
 * query) still gets the answer, so an EOF is passed on as a half-close */
static void copy_both_ways(int a, int b) {
    char buf[65536];
    struct pollfd fds[2] = {{.fd = a, .events = POLLIN}, {.fd = b, .events = POLLIN}};
    int ends = 2;
    while (ends > 0) {
        if (poll(fds, 2, -1) < 0) {
            if (errno == EINTR) continue;
            return;
        }
        for (int i = 0; i < 2; i++) {
            if (fds[i].fd < 0 || !fds[i].revents) continue;
            int to = i == 0 ? b : a;
            ssize_t n = read(fds[i].fd, buf, sizeof buf);
            if (n < 0 && errno == EINTR) continue;
            if (n > 0 && write_all(to, buf, (size_t)n) == 0) continue;
            if (n > 0) return; /* the other end is gone */
            shutdown(to, SHUT_WR);
            fds[i].fd = -1;
            ends--;
        }
    }
}

static void serve_relay(int server, const char *hostlink, int port) {
    signal(SIGCHLD, SIG_IGN); /* connection children reap themselves */
    for (;;) {
        int client = accept4(server, NULL, NULL, SOCK_CLOEXEC);
        if (client < 0) continue;
        if (fork() == 0) {
            int up = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
            struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port)};
            inet_pton(AF_INET, hostlink, &to.sin_addr);
            if (up >= 0 && connect(up, (struct sockaddr *)&to, sizeof to) == 0) copy_both_ways(client, up);
            else logmsg("relay to %s:%d: %s", hostlink, port, strerror(errno));
            _exit(0);
        }
        close(client);
    }
}

/* each relay listens before the process starts (it may connect at once), then serves in a child */
static void start_relays(const struct config *c) {
    for (int i = 0; i < c->nrelays && c->hostlink; i++) {
        const struct relay *r = &c->relays[i];
        int server = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), on = 1;
        struct sockaddr_in at = {.sin_family = AF_INET, .sin_port = htons((unsigned short)r->port)};
        inet_pton(AF_INET, r->addr, &at.sin_addr);
        setsockopt(server, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
        if (server < 0 || bind(server, (struct sockaddr *)&at, sizeof at) < 0 || listen(server, 16) < 0) {
            logmsg("relay on %s:%d: %s", r->addr, r->port, strerror(errno));
            if (server >= 0) close(server);
            continue;
        }
        if (fork() == 0) serve_relay(server, c->hostlink, r->port);
        close(server);
    }
}

struct state {
    struct config cfg;
    int out_port, err_port, in_port, ctl_port;
    int out_src, err_src;  /* read ends: pipes, or the pty master (out only) */
    int in_dst;            /* where stdin goes: pipe write end or pty master; -1 when none */
    int master;            /* pty master or -1 */
    pid_t child;
    int status;            /* exit status once the child ended, else -1 */
    unsigned long long out_bytes, err_bytes;
    char ctl_buf[1 << 18];
    size_t ctl_len;
    int acked;
    char in_buf[65536];
    size_t in_len;         /* bytes waiting to go into in_dst */
    unsigned long long in_done;  /* bytes written into in_dst so far */
    long long in_total;    /* from "stdin-eof N": the host's stdin ended after N bytes; else -1 */
    int dns_fd;            /* the DNS proxy's socket on 127.0.0.11:53, or -1 */
    int upstream_fd;       /* its socket to the upstream servers (the fallback), or -1 */
};

/* ---- debug: where the boot's time goes, on the guest's own clock ----------------------------- */

#define MAX_STAGES 16
static struct { long ms; const char *what; } stages[MAX_STAGES];
static int nstages, stages_sent;

static long uptime_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_BOOTTIME, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

/* recorded always (debug is known only once the config is read), sent once the control port is open */
static void stage(const char *what) {
    if (nstages < MAX_STAGES) stages[nstages++] = (typeof(stages[0])){uptime_ms(), what};
}

static void send_stages(int ctl_port) {
    for (; debug && ctl_port >= 0 && stages_sent < nstages; stages_sent++) {
        char line[128];
        int n = snprintf(line, sizeof line, "stage %ld %s\n", stages[stages_sent].ms, stages[stages_sent].what);
        write_all(ctl_port, line, (size_t)n);
    }
}

/* ---- docker exec: sessions multiplexed on the control port ----------------------------------
 * host->guest  "exec ID HEX" (HEX: a config like /virtainer/config), "in ID HEX", "ineof ID",
 *              "kill ID SIG", "execsize ID ROWS COLS"
 * guest->host  "out ID HEX", "err ID HEX", "done ID STATUS" (after its output ended)          */
#define MAX_SESSIONS 32
struct session {
    int used, id;
    pid_t pid;
    int out, err, in, master; /* -1 when closed */
    int status;               /* -1 while running */
    long ended_ms;            /* when the process ended: its output gets a short grace */
    char *config_buf;
    struct config cfg;
};
static struct session sessions[MAX_SESSIONS];

static const char HEX[] = "0123456789abcdef";

static void send_frame(int port, const char *kind, int id, const char *data, size_t len) {
    static char line[2 * 65536 + 64];
    int n = snprintf(line, 64, "%s %d ", kind, id);
    for (size_t i = 0; i < len; i++) {
        line[n++] = HEX[(unsigned char)data[i] >> 4];
        line[n++] = HEX[(unsigned char)data[i] & 15];
    }
    line[n++] = '\n';
    write_all(port, line, (size_t)n);
}

static size_t unhex(const char *text, char *out) {
    size_t n = 0;
    for (; text[0] && text[1]; text += 2) {
        int hi = strchr(HEX, text[0]) ? (int)(strchr(HEX, text[0]) - HEX) : 0;
        int lo = strchr(HEX, text[1]) ? (int)(strchr(HEX, text[1]) - HEX) : 0;
        out[n++] = (char)(hi * 16 + lo);
    }
    return n;
}

static struct session *find_session(int id) {
    for (int i = 0; i < MAX_SESSIONS; i++)
        if (sessions[i].used && sessions[i].id == id) return &sessions[i];
    return NULL;
}

static void child_setup(const struct config *c, int in, int out, int err, int tty);

/* ---- DNS: Docker's embedded resolver, reached through the host ------------------------------ */
#define DNS_SLOTS 64
#define DNS_MAX 4096
#define DNS_KEPT 1024 /* a query up to this size is kept for the fallback */
static struct dns_slot {
    int id, asked; /* asked: sent to the upstream servers, their answer awaited */
    struct sockaddr_in from;
    size_t len;
    char query[DNS_KEPT];
} dns_slots[DNS_SLOTS];
static int dns_last_id;

static int open_dns_proxy(void) {
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    struct sockaddr_in at = {.sin_family = AF_INET, .sin_port = htons(53)};
    inet_pton(AF_INET, "127.0.0.11", &at.sin_addr);
    if (fd < 0 || bind(fd, (struct sockaddr *)&at, sizeof at) < 0) {
        logmsg("DNS on 127.0.0.11:53: %s", strerror(errno));
        if (fd >= 0) close(fd);
        return -1;
    }
    return fd;
}

/* a query from a process in the guest: to the host, remembered by id (the oldest slot reused) */
static void dns_query(int fd, int ctl_port) {
    char buf[DNS_MAX];
    struct sockaddr_in from;
    socklen_t len = sizeof from;
    ssize_t n = recvfrom(fd, buf, sizeof buf, 0, (struct sockaddr *)&from, &len);
    if (n <= 0) return;
    dns_last_id = (dns_last_id + 1) & 0x7fffffff;
    struct dns_slot *slot = &dns_slots[dns_last_id % DNS_SLOTS];
    slot->id = dns_last_id;
    slot->asked = 0;
    slot->from = from;
    slot->len = (size_t)n <= sizeof slot->query ? (size_t)n : 0;
    memcpy(slot->query, buf, slot->len);
    send_frame(ctl_port, "dns", dns_last_id, buf, (size_t)n);
}

/* "dnsfail ID": Docker's resolver had no answer. It forwards names that are not containers' from
 * the container's namespace, whose address the VM has: those queries never come back there. The
 * guest asks the servers Docker would have asked (dns-upstream), from the container's address. */
static void dns_fallback(const struct config *c, int upstream, int id) {
    struct dns_slot *slot = &dns_slots[id % DNS_SLOTS];
    if (upstream < 0 || id <= 0 || slot->id != id || !slot->len) return;
    slot->asked = 1;
    for (int i = 0; i < c->nupstreams; i++) {
        struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(53)};
        if (inet_pton(AF_INET, c->upstreams[i], &to.sin_addr) == 1)
            sendto(upstream, slot->query, slot->len, 0, (struct sockaddr *)&to, sizeof to);
    }
}

/* an upstream server's answer: to the process that asked (matched by the query's DNS id) */
static void dns_upstream_answer(const struct config *c, int fd, int upstream) {
    char buf[DNS_MAX];
    struct sockaddr_in from;
    socklen_t len = sizeof from;
    ssize_t n = recvfrom(upstream, buf, sizeof buf, 0, (struct sockaddr *)&from, &len);
    if (n < 2 || from.sin_port != htons(53)) return;
    int known = 0;
    for (int i = 0; i < c->nupstreams; i++) {
        struct in_addr server;
        if (inet_pton(AF_INET, c->upstreams[i], &server) == 1 && server.s_addr == from.sin_addr.s_addr) known = 1;
    }
    for (int i = 0; known && i < DNS_SLOTS; i++) {
        struct dns_slot *slot = &dns_slots[i];
        if (slot->id && slot->asked && !memcmp(slot->query, buf, 2)) {
            sendto(fd, buf, (size_t)n, 0, (struct sockaddr *)&slot->from, sizeof slot->from);
            slot->id = 0;
            return;
        }
    }
}

static void dns_answer(int fd, int id, const char *hex) {
    static char buf[DNS_MAX];
    if (fd < 0 || id <= 0 || dns_slots[id % DNS_SLOTS].id != id || strlen(hex) > 2 * sizeof buf) return;
    size_t n = unhex(hex, buf);
    sendto(fd, buf, n, 0, (struct sockaddr *)&dns_slots[id % DNS_SLOTS].from, sizeof(struct sockaddr_in));
    dns_slots[id % DNS_SLOTS].id = 0;
}

/* a pty pair for a process of config c: the master, its slave in *tty; -1 on failure */
static int open_pty(const struct config *c, int *tty) {
    int master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (master < 0 || grantpt(master) < 0 || unlockpt(master) < 0) return -1;
    *tty = open(ptsname(master), O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (*tty < 0) { close(master); return -1; }
    if (c->rows && c->cols) {
        struct winsize ws = {.ws_row = c->rows, .ws_col = c->cols};
        ioctl(master, TIOCSWINSZ, &ws);
    }
    struct termios t;
    if (!c->onlcr && tcgetattr(*tty, &t) == 0) { /* as runc does when its own terminal adds the \r */
        t.c_oflag &= ~(tcflag_t)ONLCR;
        tcsetattr(*tty, TCSANOW, &t);
    }
    return master;
}

static void start_session(int ctl_port, int id, const char *hex) {
    struct session *x = NULL;
    for (int i = 0; i < MAX_SESSIONS && !x; i++)
        if (!sessions[i].used) x = &sessions[i];
    if (!x) { char line[64]; snprintf(line, sizeof line, "done %d 126\n", id); write_all(ctl_port, line, strlen(line)); return; }
    memset(x, 0, sizeof *x);
    x->config_buf = malloc(strlen(hex) / 2 + 1);
    size_t size = unhex(hex, x->config_buf);
    parse_config(&x->cfg, x->config_buf, size);
    x->used = 1; x->id = id; x->status = -1; x->out = x->err = x->in = x->master = -1;
    int in_r, out_w, err_w, tty = -1;
    if (x->cfg.terminal) {
        x->master = open_pty(&x->cfg, &tty);
        if (x->master < 0) { x->status = 126; return; }
        in_r = out_w = err_w = tty;
        x->out = x->master;
        x->in = x->cfg.with_stdin ? x->master : -1;
    } else {
        int o[2], e[2], i[2];
        if (pipe2(o, O_CLOEXEC) < 0 || pipe2(e, O_CLOEXEC) < 0 || pipe2(i, O_CLOEXEC) < 0) { x->status = 126; return; }
        x->out = o[0]; out_w = o[1];
        x->err = e[0]; err_w = e[1];
        in_r = i[0]; x->in = i[1];
        if (!x->cfg.with_stdin) { close(x->in); x->in = -1; }
    }
    x->pid = fork();
    if (x->pid == 0) child_setup(&x->cfg, in_r, out_w, err_w, tty);
    if (tty >= 0) close(tty);
    else { close(in_r); close(out_w); close(err_w); }
    if (x->pid < 0) x->status = 126;
}

static void session_input(struct session *x, const char *hex) {
    static char buf[65536 + 16];
    if (!x || x->in < 0) return;
    size_t n = unhex(hex, buf);
    if (write_all(x->in, buf, n) < 0 && x->master < 0) { close(x->in); x->in = -1; }
}

static void session_end_input(struct session *x) {
    if (!x || x->in < 0) return;
    if (x->master >= 0) write_all(x->master, "\x04", 1);
    else close(x->in);
    x->in = -1;
}

/* output of one session's fd: frames on the control port; EOF closes it */
static void session_relay(int ctl_port, struct session *x, int *fd, const char *kind) {
    char buf[16384];
    ssize_t n = read(*fd, buf, sizeof buf);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) return;
    if (n <= 0) {
        if (*fd == x->in) x->in = -1;
        close(*fd);
        *fd = -1;
        return;
    }
    send_frame(ctl_port, kind, x->id, buf, (size_t)n);
}

static void finish_sessions(int ctl_port) {
    for (int i = 0; i < MAX_SESSIONS; i++) {
        struct session *x = &sessions[i];
        if (!x->used || x->status < 0) continue;
        int drained = x->out < 0 && x->err < 0;
        if (!drained && now_ms() - x->ended_ms < 2000) continue;
        char line[64];
        snprintf(line, sizeof line, "done %d %d\n", x->id, x->status);
        write_all(ctl_port, line, strlen(line));
        if (x->out >= 0) close(x->out);
        if (x->err >= 0) close(x->err);
        if (x->in >= 0 && x->in != x->master) close(x->in);
        x->out = x->err = x->in = x->master = -1; /* polled this round: never read again */
        free(x->config_buf);
        x->used = 0;
    }
}

/* the host's stdin ended and everything it sent went in: the process reads EOF */
static void close_stdin_when_done(struct state *s) {
    if (s->in_dst < 0 || s->in_total < 0 || s->in_len > 0 || s->in_done < (unsigned long long)s->in_total) return;
    if (s->master < 0) close(s->in_dst);
    else write_all(s->master, "\x04", 1); /* EOF on a terminal is ^D */
    s->in_dst = -1;
}

static void handle_control_line(struct state *s, char *line) {
    int a, b, c;
    long long n;
    if (sscanf(line, "signal %d", &a) == 1) {
        if (s->child > 0 && s->status < 0) kill(s->child, a);
    } else if (sscanf(line, "winsize %d %d", &a, &b) == 2) {
        if (s->master >= 0) {
            struct winsize ws = {.ws_row = (unsigned short)a, .ws_col = (unsigned short)b};
            ioctl(s->master, TIOCSWINSZ, &ws);
        }
    } else if (sscanf(line, "stdin-eof %lld", &n) == 1) {
        s->in_total = n;
        close_stdin_when_done(s);
    } else if (!strncmp(line, "exec ", 5) && sscanf(line + 5, "%d", &a) == 1 && strchr(line + 5, ' ')) {
        start_session(s->ctl_port, a, strchr(line + 5, ' ') + 1);
    } else if (!strncmp(line, "in ", 3) && sscanf(line + 3, "%d", &a) == 1 && strchr(line + 3, ' ')) {
        session_input(find_session(a), strchr(line + 3, ' ') + 1);
    } else if (sscanf(line, "ineof %d", &a) == 1) {
        session_end_input(find_session(a));
    } else if (sscanf(line, "kill %d %d", &a, &b) == 2) {
        struct session *x = find_session(a);
        if (x && x->pid > 0 && x->status < 0) kill(x->pid, b);
    } else if (sscanf(line, "execsize %d %d %d", &a, &b, &c) == 3) {
        struct session *x = find_session(a);
        if (x && x->master >= 0) {
            struct winsize ws = {.ws_row = (unsigned short)b, .ws_col = (unsigned short)c};
            ioctl(x->master, TIOCSWINSZ, &ws);
        }
    } else if (!strncmp(line, "dnsr ", 5) && sscanf(line + 5, "%d", &a) == 1 && strchr(line + 5, ' ')) {
        dns_answer(s->dns_fd, a, strchr(line + 5, ' ') + 1);
    } else if (sscanf(line, "dnsfail %d", &a) == 1) {
        dns_fallback(&s->cfg, s->upstream_fd, a);
    } else if (!strcmp(line, "ack")) {
        s->acked = 1;
    }
}

static void read_control(struct state *s) {
    ssize_t n = read(s->ctl_port, s->ctl_buf + s->ctl_len, sizeof s->ctl_buf - 1 - s->ctl_len);
    if (n <= 0) {
        if (n == 0) usleep(20000); /* host not connected: the port reads as EOF, try again later */
        return;
    }
    s->ctl_len += (size_t)n;
    s->ctl_buf[s->ctl_len] = 0;
    char *nl;
    while ((nl = memchr(s->ctl_buf, '\n', s->ctl_len))) {
        *nl = 0;
        handle_control_line(s, s->ctl_buf);
        size_t used = (size_t)(nl - s->ctl_buf) + 1;
        memmove(s->ctl_buf, nl + 1, s->ctl_len - used);
        s->ctl_len -= used;
    }
    if (s->ctl_len == sizeof s->ctl_buf - 1) s->ctl_len = 0; /* an overlong line: drop it */
}

/* copy what is readable from src to the port; 0 at EOF (src closed) */
static int relay_out(int *src, int port, unsigned long long *count) {
    char buf[65536];
    ssize_t n = read(*src, buf, sizeof buf);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) return 1;
    if (n <= 0) { /* EOF, or EIO on a pty master whose slave side is all closed */
        close(*src);
        *src = -1;
        return 0;
    }
    if (write_all(port, buf, (size_t)n) == 0) *count += (unsigned long long)n;
    return 1;
}

static void reap(struct state *s) {
    int wstatus;
    pid_t pid;
    while ((pid = waitpid(-1, &wstatus, WNOHANG)) > 0) {
        for (int i = 0; i < MAX_SESSIONS; i++) {
            if (sessions[i].used && sessions[i].pid == pid) {
                sessions[i].status = WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : 128 + WTERMSIG(wstatus);
                sessions[i].ended_ms = now_ms();
            }
        }
        if (pid != s->child) continue;
        s->status = WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : 128 + WTERMSIG(wstatus);
        /* the container ends with its process: nothing it started outlives it (as with runc) */
        kill(-1, SIGKILL);
    }
}

static void start_process(struct state *s) {
    struct config *c = &s->cfg;
    int in_r = -1, out_w, err_w, tty = -1;
    s->master = -1;
    s->in_dst = -1;
    if (c->terminal) {
        s->master = open_pty(c, &tty);
        if (s->master < 0) die("pty: %s", strerror(errno));
        in_r = out_w = err_w = tty;
        s->out_src = s->master;
        s->err_src = -1;
        if (c->with_stdin) s->in_dst = s->master;
    } else {
        int out[2], err[2];
        if (pipe2(out, O_CLOEXEC) < 0 || pipe2(err, O_CLOEXEC) < 0) die("pipe: %s", strerror(errno));
        s->out_src = out[0];
        out_w = out[1];
        s->err_src = err[0];
        err_w = err[1];
        if (c->with_stdin) {
            int in[2];
            if (pipe2(in, O_CLOEXEC) < 0) die("pipe: %s", strerror(errno));
            in_r = in[0];
            s->in_dst = in[1];
            fcntl(s->in_dst, F_SETFL, O_NONBLOCK);
        } else {
            in_r = open("/dev/null", O_RDONLY | O_CLOEXEC);
        }
    }
    s->child = fork();
    if (s->child < 0) die("fork: %s", strerror(errno));
    if (s->child == 0) child_setup(c, in_r, out_w, err_w, tty);
    /* the child holds its ends now; a pty master reads EIO once every slave holder is gone */
    if (tty >= 0) close(tty);
    else {
        close(in_r);
        close(out_w);
        close(err_w);
    }
    s->status = -1;
    s->in_total = -1;
}

int main(void) {
    static struct state s;
    stage("init started");
    mount_or_die("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755");
    mount_or_die("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
    mount_or_die("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
    read_config(&s.cfg);
    if (debug) logmsg("loading modules");
    load_modules();
    stage("modules loaded");
    s.out_port = wait_port("virtainer.stdout", O_WRONLY);
    s.err_port = wait_port("virtainer.stderr", O_WRONLY);
    s.ctl_port = wait_port("virtainer.control", O_RDWR);
    s.in_port = s.cfg.with_stdin ? wait_port("virtainer.stdin", O_RDONLY) : -1;
    stage("ports open");
    send_stages(s.ctl_port);
    if (debug) logmsg("mounting the root filesystem");
    mount_root();
    stage("root filesystem mounted");
    if (s.cfg.hostname && sethostname(s.cfg.hostname, strlen(s.cfg.hostname)) < 0)
        logmsg("hostname: %s", strerror(errno));
    mount_disks(&s.cfg);
    setup_network(&s.cfg);
    s.dns_fd = s.cfg.dns_proxy ? open_dns_proxy() : -1;
    s.upstream_fd = s.dns_fd >= 0 && s.cfg.nupstreams ? socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0) : -1;
    start_relays(&s.cfg);
    stage("network configured");

    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGCHLD);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    int sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);

    if (debug) logmsg("starting %s", s.cfg.args[0]);
    start_process(&s);
    stage("command started");
    send_stages(s.ctl_port);

    long drain_deadline = 0;
    while (1) {
        if (s.status >= 0 && s.out_src < 0 && s.err_src < 0) break;
        if (s.status >= 0 && !drain_deadline) drain_deadline = now_ms() + DRAIN_DEADLINE_MS;
        if (drain_deadline && now_ms() > drain_deadline) break;
        struct pollfd fds[8 + 2 * MAX_SESSIONS];
        struct { struct session *x; int *fd; const char *kind; } watched[2 * MAX_SESSIONS];
        int n = 0, i_out = -1, i_err = -1, i_in = -1, i_dst = -1, i_dns = -1, i_up = -1, first_session, nwatched = 0;
        fds[n++] = (struct pollfd){.fd = sfd, .events = POLLIN};
        fds[n++] = (struct pollfd){.fd = s.ctl_port, .events = POLLIN};
        if (s.out_src >= 0) { i_out = n; fds[n++] = (struct pollfd){.fd = s.out_src, .events = POLLIN}; }
        if (s.err_src >= 0) { i_err = n; fds[n++] = (struct pollfd){.fd = s.err_src, .events = POLLIN}; }
        if (s.in_port >= 0 && s.in_dst >= 0 && s.in_len == 0) { i_in = n; fds[n++] = (struct pollfd){.fd = s.in_port, .events = POLLIN}; }
        if (s.in_dst >= 0 && s.in_len > 0) { i_dst = n; fds[n++] = (struct pollfd){.fd = s.in_dst, .events = POLLOUT}; }
        if (s.dns_fd >= 0 && s.status < 0) { i_dns = n; fds[n++] = (struct pollfd){.fd = s.dns_fd, .events = POLLIN}; }
        if (s.upstream_fd >= 0 && s.status < 0) { i_up = n; fds[n++] = (struct pollfd){.fd = s.upstream_fd, .events = POLLIN}; }
        first_session = n;
        for (int i = 0; i < MAX_SESSIONS && s.status < 0; i++) {
            struct session *x = &sessions[i];
            if (!x->used) continue;
            if (x->out >= 0) { watched[nwatched] = (typeof(watched[0])){x, &x->out, "out"}; fds[n++] = (struct pollfd){.fd = x->out, .events = POLLIN}; nwatched++; }
            if (x->err >= 0) { watched[nwatched] = (typeof(watched[0])){x, &x->err, "err"}; fds[n++] = (struct pollfd){.fd = x->err, .events = POLLIN}; nwatched++; }
        }
        int ready = poll(fds, (nfds_t)n, drain_deadline ? 100 : 500);
        if (ready < 0 && errno != EINTR) die("poll: %s", strerror(errno));
        finish_sessions(s.ctl_port);
        if (ready <= 0) continue;
        for (int w = 0; w < nwatched; w++)
            if (fds[first_session + w].revents && *watched[w].fd >= 0)
                session_relay(s.ctl_port, watched[w].x, watched[w].fd, watched[w].kind);
        if (fds[0].revents) {
            struct signalfd_siginfo info;
            while (read(sfd, &info, sizeof info) > 0) {}
            reap(&s);
        }
        if (fds[1].revents & (POLLIN | POLLHUP)) read_control(&s);
        if (i_dns >= 0 && fds[i_dns].revents) dns_query(s.dns_fd, s.ctl_port);
        if (i_up >= 0 && fds[i_up].revents) dns_upstream_answer(&s.cfg, s.dns_fd, s.upstream_fd);
        if (i_out >= 0 && fds[i_out].revents) relay_out(&s.out_src, s.out_port, &s.out_bytes);
        if (i_err >= 0 && fds[i_err].revents) relay_out(&s.err_src, s.err_port, &s.err_bytes);
        if (i_in >= 0 && fds[i_in].revents) {
            ssize_t got = read(s.in_port, s.in_buf, sizeof s.in_buf);
            if (got > 0) {
                s.in_len = (size_t)got;
            } else if (got == 0) {
                usleep(20000); /* host side not connected (yet): stdin ends by "stdin-eof" only */
            }
        }
        if (i_dst >= 0 && fds[i_dst].revents) {
            ssize_t put = write(s.in_dst, s.in_buf, s.in_len);
            if (put > 0) {
                memmove(s.in_buf, s.in_buf + put, s.in_len - (size_t)put);
                s.in_len -= (size_t)put;
                s.in_done += (unsigned long long)put;
                close_stdin_when_done(&s);
            } else if (put < 0 && errno != EAGAIN && errno != EINTR) {
                s.in_len = 0; /* the process closed its stdin */
                if (s.master < 0) close(s.in_dst);
                s.in_dst = -1;
            }
        }
        /* an exec session whose process was reaped and whose output ended in this round: "done"
         * now, not after the next poll's timeout (500 ms: most of docker exec's latency) */
        finish_sessions(s.ctl_port);
        /* a pty: once the child is gone, drain what is left in the master, then stop */
        if (s.status >= 0 && s.master >= 0 && s.out_src >= 0) {
            struct pollfd p = {.fd = s.out_src, .events = POLLIN};
            while (poll(&p, 1, 0) > 0 && (p.revents & POLLIN) && relay_out(&s.out_src, s.out_port, &s.out_bytes)) {}
            if (s.out_src >= 0) { close(s.out_src); s.out_src = -1; }
        }
    }
    if (s.status < 0) s.status = 255;
    stage("command exited, output relayed");
    send_stages(s.ctl_port);
    char line[128];
    snprintf(line, sizeof line, "exit %d %llu %llu\n", s.status, s.out_bytes, s.err_bytes);
    if (debug) logmsg("%s", line);
    write_all(s.ctl_port, line, strlen(line));
    long deadline = now_ms() + ACK_DEADLINE_MS;
    while (!s.acked && now_ms() < deadline) {
        struct pollfd p = {.fd = s.ctl_port, .events = POLLIN};
        if (poll(&p, 1, 100) > 0) read_control(&s);
    }
    poweroff();
    return 0;
}
