/* Sends Read data over loopback TCP the two ways the NVMe/TCP target can:
 * copied with its 24-byte C2HData headers into one send buffer and sent, or
 * sent from where it lies with a vectored write (a header slice and a data
 * slice per read), the kernel's copy the only one (docs/performance.md,
 * "Read data sent from the RAM bdev's memory").
 *
 *   cc -O2 -o /tmp/send-bench perf/scripts/send-bench.c -lpthread
 *   /tmp/send-bench copy 32; /tmp/send-bench lend 32        # 4 KiB reads, 32 per send
 *   /tmp/send-bench copy 16 2000 131072                     # 128 KiB reads, 16 per send
 *
 * The sender runs on CPU 0, a thread draining the socket on CPU 1; reads
 * come from random places in a 256 MiB region on huge pages (as a RAM bdev's
 * memory). Prints the sender's CPU time (which on loopback includes the
 * receiver's TCP processing, run in the sender's context) and wall time per
 * read. Take turns and medians: one run says little on a shared machine. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define REGION (256UL << 20)
#define HEADER 24
#define MAX_READS 1024

static int drain_fd;

static void pin(int cpu) {
    cpu_set_t s;
    CPU_ZERO(&s);
    CPU_SET(cpu, &s);
    sched_setaffinity(0, sizeof s, &s);
}

static void *drain(void *arg) {
    static char buf[1 << 20];
    (void)arg;
    pin(1);
    while (recv(drain_fd, buf, sizeof buf, 0) > 0) {
    }
    return NULL;
}

static double seconds(clockid_t c) {
    struct timespec t;
    clock_gettime(c, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

/* Sends all of `iov[0..n]`, advancing through it as the socket takes bytes. */
static int send_all(int fd, struct iovec *iov, int n) {
    struct msghdr m = {.msg_iov = iov, .msg_iovlen = n};
    while (m.msg_iovlen > 0) {
        ssize_t k = sendmsg(fd, &m, 0);
        if (k <= 0) {
            perror("sendmsg");
            return -1;
        }
        while (k > 0 && m.msg_iovlen > 0) {
            if ((size_t)k >= m.msg_iov[0].iov_len) {
                k -= m.msg_iov[0].iov_len;
                m.msg_iov++;
                m.msg_iovlen--;
            } else {
                m.msg_iov[0].iov_base = (char *)m.msg_iov[0].iov_base + k;
                m.msg_iov[0].iov_len -= k;
                k = 0;
            }
        }
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 3 || (strcmp(argv[1], "copy") && strcmp(argv[1], "lend"))) {
        fprintf(stderr, "usage: %s copy|lend READS_PER_SEND [SENDS [BYTES_PER_READ]]\n", argv[0]);
        return 2;
    }
    int lend = !strcmp(argv[1], "lend");
    int reads = atoi(argv[2]);
    int sends = argc > 3 ? atoi(argv[3]) : 20000;
    size_t bs = argc > 4 ? (size_t)atol(argv[4]) : 4096;
    if (reads < 1 || reads > MAX_READS || sends < 1 || bs < 512 || bs > REGION / 2) {
        fprintf(stderr, "READS_PER_SEND 1..%d, SENDS >= 1, BYTES_PER_READ 512..%lu\n", MAX_READS, REGION / 2);
        return 2;
    }
    pin(0);
    char *region = mmap(NULL, REGION, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (region == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    madvise(region, REGION, MADV_HUGEPAGE);
    memset(region, 7, REGION);

    int one = 1;
    int l = socket(AF_INET, SOCK_STREAM, 0);
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof a;
    if (bind(l, (void *)&a, sizeof a) || listen(l, 1) || getsockname(l, (void *)&a, &alen)) {
        perror("listen");
        return 1;
    }
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(s, (void *)&a, sizeof a)) {
        perror("connect");
        return 1;
    }
    drain_fd = accept(l, NULL, NULL);
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    pthread_t t;
    pthread_create(&t, NULL, drain, NULL);

    char *buf = aligned_alloc(4096, ((size_t)reads * (bs + HEADER) + 4095) / 4096 * 4096);
    static char headers[MAX_READS * HEADER];
    memset(headers, 1, sizeof headers);
    static struct iovec iov[2 * MAX_READS];
    unsigned long seed = 12345;
    double cpu0 = seconds(CLOCK_THREAD_CPUTIME_ID), wall0 = seconds(CLOCK_MONOTONIC);
    for (int i = 0; i < sends; i++) {
        size_t len = 0;
        int n = 0;
        for (int r = 0; r < reads; r++) {
            seed = seed * 6364136223846793005UL + 1;
            char *data = region + ((seed >> 20) % (REGION / bs)) * bs;
            if (lend) {
                iov[n++] = (struct iovec){headers + r * HEADER, HEADER};
                iov[n++] = (struct iovec){data, bs};
            } else {
                memcpy(buf + len, headers + r * HEADER, HEADER);
                memcpy(buf + len + HEADER, data, bs);
                len += HEADER + bs;
            }
        }
        if (!lend)
            iov[n++] = (struct iovec){buf, len};
        if (send_all(s, iov, n))
            return 1;
    }
    double cpu = seconds(CLOCK_THREAD_CPUTIME_ID) - cpu0, wall = seconds(CLOCK_MONOTONIC) - wall0;
    double per = 1e6 / ((double)sends * reads);
    printf("%s %d x %zu bytes per send: sender CPU %.3f us per read, wall %.3f us per read\n", argv[1], reads, bs,
           cpu * per, wall * per);
    shutdown(s, SHUT_WR);
    pthread_join(t, NULL);
    return 0;
}
