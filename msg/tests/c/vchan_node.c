/*
 * vchan_node: a C libxenvchan peer for vchan's interop tests (msg/tests/c_interop*.rs).
 *
 * Plays the roles of Xen's tools/vchan/node (blocking calls, one direction after the other)
 * and node-select (non-blocking calls and select(2) on libxenvchan_fd_for_select, both
 * directions at once), as server or client, in stream (libxenvchan_write/read) or packet
 * (libxenvchan_send/recv) mode. It sends a deterministic pattern and checks every byte it
 * receives against the pattern it expects, so a single wrong byte, a lost or duplicated chunk
 * fails the run; it also reports an FNV-1a checksum of each direction, which the Rust side
 * compares with its own.
 *
 * Built by the tests with gcc against Debian's headers (libxen-dev) and Debian's
 * libxenvchan.so.4.17; run with LD_LIBRARY_PATH pointing at the simulated host's drop-in
 * libxengnttab/libxenevtchn (tools/sim-libs.sh) and the sim's environment.
 *
 * usage: vchan_node server|client DOMID PATH [options]
 *   -m stream|packet   transfer calls (default stream)
 *   -r N, -w N         server: read_min / write_min of libxenvchan_server_init (default 0)
 *   -s N, -S SEED      bytes to send, seed of their pattern
 *   -R N, -T SEED      bytes to receive, seed of their expected pattern
 *   -c N, -C N         bytes per send/write call and per recv/read call (in packet mode:
 *                      the packet sizes; default 4096, clipped to what is left)
 *   -b                 blocking calls, send everything then receive everything (node);
 *                      default: non-blocking + select(2), both directions at once (node-select)
 *   -H                 hold: after the transfers, block reading until the peer closes
 *
 * Output (stdout, one line each, flushed): "ready" once initialised; "sent N SUM" and
 * "received N SUM" (decimal count, hex FNV-1a 64) when done; "closed" when the peer closed
 * during -H. Exit status: 0 success, 1 usage, 2 init failed, 3 wrong data, 4 a vchan call
 * failed (the peer closed), 5 no progress for 60 s.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <unistd.h>

#include <libxenvchan.h>

/* Byte `pos` of the pattern with `seed`: splitmix64 of the 8-byte block it falls in. */
static uint64_t splitmix64(uint64_t z)
{
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static void pattern(uint64_t seed, uint64_t pos, unsigned char *buf, size_t len)
{
    size_t i = 0;
    while (i < len) {
        uint64_t block = (pos + i) / 8;
        uint64_t v = splitmix64(seed + block * 0x9E3779B97F4A7C15ull);
        unsigned off = (pos + i) % 8;
        for (; off < 8 && i < len; off++, i++)
            buf[i] = (unsigned char)(v >> (8 * off));
    }
}

#define FNV_OFFSET 0xcbf29ce484222325ull
#define FNV_PRIME 0x100000001b3ull

static uint64_t fnv1a(uint64_t h, const unsigned char *buf, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        h ^= buf[i];
        h *= FNV_PRIME;
    }
    return h;
}

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
    fflush(stdout);
}

static void usage(void)
{
    fprintf(stderr,
            "usage: vchan_node server|client DOMID PATH [-m stream|packet] [-r N] [-w N]\n"
            "       [-s N] [-S SEED] [-R N] [-T SEED] [-c N] [-C N] [-b] [-H]\n");
    exit(1);
}

struct side {
    uint64_t total, done, seed, sum;
    size_t chunk;
    unsigned char *buf;
};

static int packet_mode;
static struct libxenvchan *ctrl;

/* One send attempt: returns bytes moved (0: no room now), exits on error. */
static size_t send_some(struct side *s)
{
    size_t n = s->total - s->done;
    int r;
    if (n > s->chunk)
        n = s->chunk;
    pattern(s->seed, s->done, s->buf, n);
    r = packet_mode ? libxenvchan_send(ctrl, s->buf, n) : libxenvchan_write(ctrl, s->buf, n);
    if (r < 0) {
        say("error %s failed after %" PRIu64 " bytes sent (errno %d: %s)",
            packet_mode ? "libxenvchan_send" : "libxenvchan_write", s->done, errno,
            strerror(errno));
        exit(4);
    }
    if (packet_mode && r != 0 && (size_t)r != n) {
        say("error libxenvchan_send moved %d of a %zu-byte packet", r, n);
        exit(4);
    }
    s->sum = fnv1a(s->sum, s->buf, (size_t)r);
    s->done += (size_t)r;
    return (size_t)r;
}

/* One receive attempt: returns bytes moved (0: nothing now), exits on error or bad data. */
static size_t recv_some(struct side *s, unsigned char *want)
{
    size_t n = s->total - s->done;
    int r;
    if (n > s->chunk)
        n = s->chunk;
    r = packet_mode ? libxenvchan_recv(ctrl, s->buf, n) : libxenvchan_read(ctrl, s->buf, n);
    if (r < 0) {
        say("error %s failed after %" PRIu64 " bytes received (the peer closed?)",
            packet_mode ? "libxenvchan_recv" : "libxenvchan_read", s->done);
        exit(4);
    }
    if (packet_mode && r != 0 && (size_t)r != n) {
        say("error libxenvchan_recv moved %d of a %zu-byte packet", r, n);
        exit(4);
    }
    pattern(s->seed, s->done, want, (size_t)r);
    if (memcmp(want, s->buf, (size_t)r) != 0) {
        for (int i = 0; i < r; i++)
            if (want[i] != s->buf[i]) {
                say("mismatch at byte %" PRIu64 ": got %u, want %u", s->done + i, s->buf[i],
                    want[i]);
                break;
            }
        exit(3);
    }
    s->sum = fnv1a(s->sum, s->buf, (size_t)r);
    s->done += (size_t)r;
    return (size_t)r;
}

int main(int argc, char **argv)
{
    struct side tx = { .sum = FNV_OFFSET, .chunk = 4096 };
    struct side rx = { .sum = FNV_OFFSET, .chunk = 4096 };
    size_t read_min = 0, write_min = 0;
    int blocking = 0, hold = 0, is_server, domid, opt;
    const char *path;
    unsigned char *want;

    if (argc < 4)
        usage();
    if (strcmp(argv[1], "server") == 0)
        is_server = 1;
    else if (strcmp(argv[1], "client") == 0)
        is_server = 0;
    else
        usage();
    domid = atoi(argv[2]);
    path = argv[3];
    optind = 4;
    while ((opt = getopt(argc, argv, "m:r:w:s:S:R:T:c:C:bH")) != -1) {
        switch (opt) {
        case 'm':
            if (strcmp(optarg, "packet") == 0)
                packet_mode = 1;
            else if (strcmp(optarg, "stream") != 0)
                usage();
            break;
        case 'r': read_min = strtoull(optarg, NULL, 0); break;
        case 'w': write_min = strtoull(optarg, NULL, 0); break;
        case 's': tx.total = strtoull(optarg, NULL, 0); break;
        case 'S': tx.seed = strtoull(optarg, NULL, 0); break;
        case 'R': rx.total = strtoull(optarg, NULL, 0); break;
        case 'T': rx.seed = strtoull(optarg, NULL, 0); break;
        case 'c': tx.chunk = strtoull(optarg, NULL, 0); break;
        case 'C': rx.chunk = strtoull(optarg, NULL, 0); break;
        case 'b': blocking = 1; break;
        case 'H': hold = 1; break;
        default: usage();
        }
    }
    if (tx.chunk == 0 || rx.chunk == 0)
        usage();
    tx.buf = malloc(tx.chunk);
    rx.buf = malloc(rx.chunk);
    want = malloc(rx.chunk);
    if (!tx.buf || !rx.buf || !want) {
        perror("malloc");
        return 2;
    }

    if (is_server)
        ctrl = libxenvchan_server_init(NULL, domid, path, read_min, write_min);
    else
        ctrl = libxenvchan_client_init(NULL, domid, path);
    if (!ctrl) {
        say("error libxenvchan_%s_init failed (errno %d: %s)", is_server ? "server" : "client",
            errno, strerror(errno));
        return 2;
    }
    /* libxenvchan leaves `blocking` uninitialised: always set it. */
    ctrl->blocking = blocking;
    say("ready");

    if (blocking) {
        while (tx.done < tx.total)
            send_some(&tx);
        while (rx.done < rx.total)
            recv_some(&rx, want);
    } else {
        int fd = libxenvchan_fd_for_select(ctrl);
        while (tx.done < tx.total || rx.done < rx.total) {
            size_t moved = 0;
            if (tx.done < tx.total)
                moved += send_some(&tx);
            if (rx.done < rx.total)
                moved += recv_some(&rx, want);
            if (moved == 0) {
                fd_set rfds;
                struct timeval tv = { .tv_sec = 60 };
                int r;
                FD_ZERO(&rfds);
                FD_SET(fd, &rfds);
                r = select(fd + 1, &rfds, NULL, NULL, &tv);
                if (r < 0 && errno != EINTR) {
                    perror("select");
                    return 4;
                }
                if (r == 0) {
                    say("stalled: sent %" PRIu64 " of %" PRIu64 ", received %" PRIu64
                        " of %" PRIu64, tx.done, tx.total, rx.done, rx.total);
                    return 5;
                }
                if (r > 0 && libxenvchan_wait(ctrl) < 0) {
                    say("error libxenvchan_wait failed (errno %d: %s)", errno, strerror(errno));
                    return 4;
                }
            }
        }
    }
    if (tx.total)
        say("sent %" PRIu64 " %016" PRIx64, tx.done, tx.sum);
    if (rx.total)
        say("received %" PRIu64 " %016" PRIx64, rx.done, rx.sum);

    if (hold) {
        unsigned char c;
        ctrl->blocking = 1;
        if (libxenvchan_read(ctrl, &c, 1) >= 0) {
            say("error unexpected data while holding");
            return 3;
        }
        say("closed");
    }
    libxenvchan_close(ctrl);
    return 0;
}
