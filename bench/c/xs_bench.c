/*
 * xs_bench: the C side of bench/benches/xenstore.rs. Drives Debian's libxenstore (the
 * client every Xen tool uses) against whatever XENSTORED_PATH names, so that criterion can
 * time it next to our Rust client in the same run, against the same simulated xenstored.
 *
 * Protocol on stdin/stdout, one command per line:
 *   wr N     N times: xs_write(key, "v") then xs_read(key)     -> prints elapsed ns
 *   watch N  N times: xs_write(watched key) then wait for its watch event -> elapsed ns
 *   quit
 * Errors go to stderr and exit non-zero.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <xenstore.h>

static unsigned long long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (unsigned long long)ts.tv_sec * 1000000000ull + (unsigned long long)ts.tv_nsec;
}

static void die(const char *what)
{
    fprintf(stderr, "xs_bench: %s: %s\n", what, strerror(errno));
    exit(1);
}

/* Waits for an event on `path` with token `tok` (skipping any other). */
static void wait_event(struct xs_handle *h, const char *path)
{
    for (;;) {
        unsigned int n;
        char **ev = xs_read_watch(h, &n);
        if (!ev)
            die("xs_read_watch");
        int hit = strcmp(ev[XS_WATCH_PATH], path) == 0;
        free(ev);
        if (hit)
            return;
    }
}

int main(void)
{
    const char *key = "/bench/c/key";
    const char *wkey = "/bench/c/watched";
    struct xs_handle *h = xs_open(0);
    if (!h)
        die("xs_open (is XENSTORED_PATH set?)");
    if (!xs_write(h, XBT_NULL, key, "v", 1) || !xs_write(h, XBT_NULL, wkey, "0", 1))
        die("xs_write");
    if (!xs_watch(h, wkey, "tok"))
        die("xs_watch");
    wait_event(h, wkey); /* the event fired at registration */
    printf("ready\n");
    fflush(stdout);

    char cmd[64];
    unsigned long long n;
    while (scanf("%63s", cmd) == 1) {
        if (strcmp(cmd, "quit") == 0)
            break;
        if (scanf("%llu", &n) != 1)
            die("bad command");
        unsigned long long t0 = now_ns();
        for (unsigned long long i = 0; i < n; i++) {
            if (strcmp(cmd, "wr") == 0) {
                unsigned int len;
                if (!xs_write(h, XBT_NULL, key, "v", 1))
                    die("xs_write");
                char *v = xs_read(h, XBT_NULL, key, &len);
                if (!v)
                    die("xs_read");
                free(v);
            } else if (strcmp(cmd, "watch") == 0) {
                if (!xs_write(h, XBT_NULL, wkey, "1", 1))
                    die("xs_write");
                wait_event(h, wkey);
            } else {
                errno = EINVAL;
                die(cmd);
            }
        }
        printf("%llu\n", now_ns() - t0);
        fflush(stdout);
    }
    xs_close(h);
    return 0;
}
