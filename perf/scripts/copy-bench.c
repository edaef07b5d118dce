/* Copies into and out of a large memory region as the RAM bdev does, to
 * weigh a copy's variants on this machine (docs/performance.md, "Streaming
 * stores for RAM writes").
 *
 *   cc -O2 -o /tmp/copy-bench perf/scripts/copy-bench.c
 *   taskset -c 0 /tmp/copy-bench write 4      # KiB per copy: memcpy vs streaming stores
 *   taskset -c 0 /tmp/copy-bench read         # 4 KiB reads: destination aligned vs 24 bytes in
 *
 * write: a warm source (rewritten before each copy, as a receive buffer is)
 * copied to random places in a 256 MiB region on huge pages, with memcpy or
 * with SSE2 streaming stores and a store fence. read: 4 KiB from random
 * places in the region into a warm send buffer, the destination 64-byte
 * aligned or 24 bytes in (after a C2HData header). Prints ns per copy, each
 * variant twice, taking turns. */
#include <immintrin.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#define REGION (256UL << 20)

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec * 1e-9;
}

static unsigned long next(unsigned long *x)
{
	*x ^= *x << 13;
	*x ^= *x >> 7;
	*x ^= *x << 17;
	return *x;
}

static void streaming_copy(char *d, const char *s, size_t n)
{
	for (size_t i = 0; i < n; i += 16)
		_mm_stream_si128((__m128i *)(d + i), _mm_loadu_si128((const __m128i *)(s + i)));
	_mm_sfence();
}

int main(int argc, char **argv)
{
	if (argc < 2 || (strcmp(argv[1], "write") && strcmp(argv[1], "read"))) {
		fprintf(stderr, "usage: %s write KIB | read\n", argv[0]);
		return 2;
	}
	char *region = mmap(0, REGION, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (region == MAP_FAILED) {
		perror("mmap");
		return 1;
	}
	madvise(region, REGION, MADV_HUGEPAGE);
	memset(region, 1, REGION);
	int write = !strcmp(argv[1], "write");
	size_t len = write ? (size_t)atoi(argc > 2 ? argv[2] : "4") * 1024 : 4096;
	if (len == 0 || len % 64 || len > REGION) {
		fprintf(stderr, "KIB: a positive whole number of KiB up to 262144\n");
		return 2;
	}
	char *bufs[32];
	for (int i = 0; i < 32; i++) {
		bufs[i] = aligned_alloc(4096, len + 4096);
		memset(bufs[i], i, len + 4096);
	}
	for (int round = 0; round < 4; round++) {
		int variant = round & 1;
		unsigned long x = 88172645463325252UL;
		long n = 0;
		double t0 = now();
		while (now() - t0 < 1.0) {
			for (int k = 0; k < 64; k++, n++) {
				char *at = region + next(&x) % (REGION / len) * len;
				char *buf = bufs[n % 32];
				if (write) {
					memset(buf, (int)n, len);
					if (variant)
						streaming_copy(at, buf, len);
					else
						memcpy(at, buf, len);
				} else {
					memcpy(buf + (variant ? 24 : 0), at, len);
				}
			}
		}
		double ns = (now() - t0) / n * 1e9;
		if (write)
			printf("%zu KiB %s: %.0f ns per copy (with the source's rewrite)\n", len / 1024,
			       variant ? "streaming stores" : "memcpy", ns);
		else
			printf("4 KiB read, destination %s: %.0f ns per copy\n",
			       variant ? "24 bytes into a line" : "aligned", ns);
	}
	if (write) {
		long n = 0;
		double t0 = now();
		while (now() - t0 < 1.0)
			for (int k = 0; k < 64; k++, n++)
				memset(bufs[n % 32], (int)n, len);
		printf("the source's rewrite alone: %.0f ns\n", (now() - t0) / n * 1e9);
	}
	return 0;
}
