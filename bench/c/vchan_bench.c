/*
 * vchan_bench: the C libxenvchan side of the comparison harness (`vchan-bench compare`).
 *
 * Drives Debian's libxenvchan.so.4.17 exactly as a C application would, on the simulated
 * host's drop-in libxengnttab/libxenevtchn (LD_LIBRARY_PATH), so that the harness can time it
 * beside the Rust channel in the same run, with the same ring and message sizes. Timing uses
 * clock_gettime(CLOCK_MONOTONIC); nothing in a timed loop looks at the bytes moved.
 *
 * usage: vchan_bench server|client DOMID PATH ROLE RING MODE
 *   ROLE  src   write COUNT messages of MSG bytes (libxenvchan_write)
 *         sink  read MSG*COUNT bytes in reads of up to MSG bytes (libxenvchan_read)
 *         ping  COUNT round trips of MSG bytes; prints every round trip's time
 *         echo  COUNT times: read MSG bytes, write them back
 *   RING  server: read_min and write_min of libxenvchan_server_init (client: ignored)
 *   MODE  block  blocking calls (ctrl->blocking = 1: libxenvchan_wait sleeps on the event
 *                channel, C's only waiting strategy)
 *         busy   non-blocking calls retried at once (busy polling)
 * Environment: BENCH_CPU=N pins the process to CPU N.
 *
 * Protocol: prints "ready" once initialised (server: advertised; client: connected), then
 * reads commands on stdin, one per line:
 *   run MSG COUNT    do COUNT units of ROLE with MSG-byte messages, then print
 *                    "done WALL_NS" (ping: "samples NS NS ..." first)
 *   check MSG COUNT  as run, but src sends a position pattern and sink verifies it (outside
 *                    any timing): "done 0" or "bad OFFSET"
 *   quit (or end of input)
 * Errors go to stderr; exit status 2 = init failed, 4 = a vchan call failed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libxenvchan.h>

static struct libxenvchan *ctrl;
static int busy;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void fail(const char *what)
{
    fprintf(stderr, "vchan_bench: %s failed (errno %d: %s)\n", what, errno, strerror(errno));
    exit(4);
}

/* Writes all `len` bytes (blocking mode: one call; busy: retried until all fit). */
static void write_all(const unsigned char *buf, size_t len)
{
    size_t done = 0;
    while (done < len) {
        int r = libxenvchan_write(ctrl, buf + done, len - done);
        if (r < 0)
            fail("libxenvchan_write");
        done += (size_t)r;
    }
}

/* Reads exactly `len` bytes. */
static void read_exact(unsigned char *buf, size_t len)
{
    size_t done = 0;
    while (done < len) {
        int r = libxenvchan_read(ctrl, buf + done, len - done);
        if (r < 0)
            fail("libxenvchan_read");
        done += (size_t)r;
    }
}

static unsigned char pattern_byte(uint64_t pos)
{
    return (unsigned char)(pos % 251);
}

int main(int argc, char **argv)
{
    if (argc != 7) {
        fprintf(stderr, "usage: vchan_bench server|client DOMID PATH src|sink|ping|echo RING "
                        "block|busy\n");
        return 1;
    }
    int server = strcmp(argv[1], "server") == 0;
    int domid = atoi(argv[2]);
    const char *path = argv[3];
    const char *role = argv[4];
    size_t ring = strtoull(argv[5], NULL, 10);
    busy = strcmp(argv[6], "busy") == 0;

    const char *cpu = getenv("BENCH_CPU");
    if (cpu && *cpu) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(atoi(cpu), &set);
        if (sched_setaffinity(0, sizeof(set), &set) != 0)
            perror("vchan_bench: sched_setaffinity (continuing unpinned)");
    }

    if (server)
        ctrl = libxenvchan_server_init(NULL, domid, path, ring, ring);
    else
        ctrl = libxenvchan_client_init(NULL, domid, path);
    if (!ctrl) {
        perror(server ? "vchan_bench: libxenvchan_server_init" : "vchan_bench: libxenvchan_client_init");
        return 2;
    }
    ctrl->blocking = !busy;
    printf("ready\n");
    fflush(stdout);

    size_t cap = 1 << 20;
    unsigned char *buf = malloc(cap);
    if (!buf) {
        perror("malloc");
        return 2;
    }
    memset(buf, 0x5a, cap);

    char line[256];
    uint64_t *samples = NULL;
    size_t samples_cap = 0;
    uint64_t stream_pos = 0; /* bytes sent or received so far, for check */
    while (fgets(line, sizeof line, stdin)) {
        char cmd[16];
        size_t msg;
        unsigned long long count;
        if (strncmp(line, "quit", 4) == 0)
            break;
        if (sscanf(line, "%15s %zu %llu", cmd, &msg, &count) != 3 || msg == 0 || msg > cap) {
            fprintf(stderr, "vchan_bench: bad command: %s", line);
            return 1;
        }
        int check = strcmp(cmd, "check") == 0;
        uint64_t wall = 0;
        if (strcmp(role, "src") == 0) {
            uint64_t t0 = now_ns();
            for (unsigned long long i = 0; i < count; i++) {
                if (check) {
                    for (size_t j = 0; j < msg; j++)
                        buf[j] = pattern_byte(stream_pos + j);
                    stream_pos += msg;
                }
                write_all(buf, msg);
            }
            wall = now_ns() - t0;
            if (check)
                memset(buf, 0x5a, cap);
        } else if (strcmp(role, "sink") == 0) {
            uint64_t total = (uint64_t)msg * count, got = 0;
            uint64_t t0 = now_ns();
            while (got < total) {
                size_t want = total - got < msg ? (size_t)(total - got) : msg;
                int r = libxenvchan_read(ctrl, buf, want);
                if (r < 0)
                    fail("libxenvchan_read");
                if (check) {
                    for (int j = 0; j < r; j++)
                        if (buf[j] != pattern_byte(stream_pos + (uint64_t)j)) {
                            printf("bad %" PRIu64 "\n", stream_pos + (uint64_t)j);
                            fflush(stdout);
                            return 3;
                        }
                    stream_pos += (uint64_t)r;
                }
                got += (uint64_t)r;
            }
            wall = now_ns() - t0;
        } else if (strcmp(role, "ping") == 0) {
            if (samples_cap < count) {
                free(samples);
                samples_cap = count;
                samples = malloc(count * sizeof *samples);
                if (!samples) {
                    perror("malloc");
                    return 2;
                }
            }
            uint64_t t0 = now_ns(), prev = t0;
            for (unsigned long long i = 0; i < count; i++) {
                write_all(buf, msg);
                read_exact(buf, msg);
                uint64_t t = now_ns();
                samples[i] = t - prev;
                prev = t;
            }
            wall = prev - t0;
            printf("samples");
            for (unsigned long long i = 0; i < count; i++)
                printf(" %" PRIu64, samples[i]);
            printf("\n");
        } else if (strcmp(role, "echo") == 0) {
            uint64_t t0 = now_ns();
            for (unsigned long long i = 0; i < count; i++) {
                read_exact(buf, msg);
                write_all(buf, msg);
            }
            wall = now_ns() - t0;
        } else {
            fprintf(stderr, "vchan_bench: unknown role %s\n", role);
            return 1;
        }
        printf("done %" PRIu64 "\n", check ? 0 : wall);
        fflush(stdout);
    }
    libxenvchan_close(ctrl);
    free(buf);
    free(samples);
    return 0;
}
