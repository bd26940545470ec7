/* Copy speed into a 1 MiB ring at the strides of vchan frames, with the payload at the
 * frame's start (offset 0) or after the 8-byte frame header (offset 8), from a line-aligned
 * source; and the offset-8 case split so that the destination is line-aligned. One thread,
 * no vchan: it isolates the cost of the relative misalignment of source and destination
 * (bench/README.md, "What bounds the targets still missed").
 *
 *   gcc -O2 bench/c/copy_alignment.c -o /tmp/copy_alignment && /tmp/copy_alignment
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(void)
{
    const size_t ring = 1 << 20;
    char *r = aligned_alloc(4096, ring + 4096);
    char *src = aligned_alloc(4096, ring);
    if (!r || !src)
        return 1;
    memset(r, 1, ring + 4096);
    memset(src, 2, ring);
    const size_t sizes[] = {4096, 65536, 262144};
    for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
        size_t n = sizes[si];
        for (int mode = 0; mode < 3; mode++) {
            size_t hdr = mode ? 8 : 0, stride = n + hdr, pos = 0;
            long iters = (long)((8ull << 30) / n);
            double t0 = now();
            for (long i = 0; i < iters; i++) {
                if (pos + stride > ring)
                    pos = 0;
                char *d = r + pos + hdr;
                if (mode == 2) {
                    size_t head = (64 - ((size_t)d & 63)) & 63;
                    memcpy(d, src, head);
                    memcpy(d + head, src + head, n - head);
                } else {
                    memcpy(d, src, n);
                }
                pos += stride;
            }
            double t = now() - t0;
            printf("%7zu-byte payloads, %s: %6.0f MB/s\n", n,
                   mode == 0 ? "offset 0" : mode == 1 ? "offset 8" : "offset 8, destination-aligned split",
                   iters * (double)n / t / 1e6);
        }
    }
    return 0;
}
