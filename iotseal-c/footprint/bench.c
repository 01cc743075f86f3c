/*
 * Readings sealed per second on one core: the device engine driven through the C API next to
 * the same engine driven from Rust (iotseal_bench_rust_rate), in this process, against the
 * loopback gateway (the gateway side of the protocol in memory: no network; its work is not
 * timed). A benchmark, not a test; docs/performance.md "Devices in C" has the method and the
 * figures.
 *
 *   cargo build --release -p iotseal-c --features bench && make -C iotseal-c/footprint bench
 *   iotseal-c/footprint/bench [READINGS [REPEAT]]     (defaults 200000 readings per run, 7 runs)
 *
 * Each round pushes BATCH one-value readings (iotseal_push, one call per reading), takes the
 * request (iotseal_poll_transmit: the readings sealed into a record, copied out), lets the
 * gateway answer (iotseal_loopback_answer, not timed), hands the answer to the engine
 * (iotseal_handle_response: the acknowledgement opened, the readings forgotten) and drains the
 * events (iotseal_poll_event). Timed with clock_gettime(CLOCK_MONOTONIC) around the same calls
 * as the Rust side times with Instant. Batches 1 and 100; the runs interleave (Rust, C, Rust,
 * C, ...) so load changes hit both alike. Exits 1 if a run does not acknowledge every reading.
 */
#define _POSIX_C_SOURCE 199309L
#define IOTSEAL_BENCH
#include "iotseal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/utsname.h>

#define MAX_RUNS 64
#define BUF_LEN (1u << 20) /* the engine's default request budget */

static uint8_t request[BUF_LEN];
static uint8_t answer[BUF_LEN];

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static uint64_t wall_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return (uint64_t)t.tv_sec * 1000u + (uint64_t)t.tv_nsec / 1000000u;
}

static void fail(const char *what, iotseal_status s) {
    fprintf(stderr, "bench: %s failed (status %d)\n", what, (int)s);
    exit(1);
}

/* One request and its answer; returns the seconds spent in the engine's calls. */
static double exchange(iotseal_loopback *gw, iotseal_device *dev, uint64_t now, uint64_t *acked) {
    iotseal_endpoint ep;
    size_t len = 0, alen = 0;
    uint16_t status = 0;
    iotseal_event ev;
    double t0 = now_s();
    iotseal_status s = iotseal_poll_transmit(dev, now, &ep, request, sizeof request, &len);
    double t1 = now_s();
    if (s != IOTSEAL_OK) fail("iotseal_poll_transmit", s);
    s = iotseal_loopback_answer(gw, now, ep, request, len, &status, answer, sizeof answer, &alen);
    if (s != IOTSEAL_OK) fail("iotseal_loopback_answer", s);
    double t2 = now_s();
    s = iotseal_handle_response(dev, now, status, answer, alen, 0);
    if (s != IOTSEAL_OK) fail("iotseal_handle_response", s);
    while (iotseal_poll_event(dev, &ev) == IOTSEAL_OK)
        if (ev.kind == IOTSEAL_EVENT_ACKNOWLEDGED) *acked += ev.count;
    return (t1 - t0) + (now_s() - t2);
}

/* Readings per second through the C API: `rounds` rounds of `batch` readings. */
static double c_rate(size_t batch, uint64_t rounds) {
    iotseal_loopback *gw;
    iotseal_device *dev;
    char err[256];
    iotseal_status s = iotseal_loopback_new(NULL, &gw, &dev, err, sizeof err);
    if (s != IOTSEAL_OK) {
        fprintf(stderr, "bench: %s\n", err);
        exit(1);
    }
    uint64_t now = wall_ms(), acked = 0;
    int established = 0;
    iotseal_connect(dev);
    for (int i = 0; i < 8 && !established; i++) { /* the handshake: M1, then M3 */
        iotseal_endpoint ep;
        size_t len;
        if (iotseal_poll_transmit(dev, now, &ep, request, sizeof request, &len) != IOTSEAL_OK) break;
        uint16_t status;
        size_t alen;
        s = iotseal_loopback_answer(gw, now, ep, request, len, &status, answer, sizeof answer, &alen);
        if (s != IOTSEAL_OK) fail("iotseal_loopback_answer", s);
        iotseal_handle_response(dev, now, status, answer, alen, 0);
        iotseal_event ev;
        while (iotseal_poll_event(dev, &ev) == IOTSEAL_OK)
            if (ev.kind == IOTSEAL_EVENT_HANDSHAKE_COMPLETE) established = 1;
    }
    if (!established) fail("the loopback handshake", IOTSEAL_NONE);
    const uint8_t kind = IOTSEAL_SENSOR_TEMPERATURE;
    const float value = 21.5f;
    double spent = 0;
    for (uint64_t r = 0; r < rounds; r++) {
        double t0 = now_s();
        for (size_t i = 0; i < batch; i++) {
            s = iotseal_push(dev, now, &kind, &value, 1, NULL);
            if (s != IOTSEAL_OK) fail("iotseal_push", s);
        }
        spent += now_s() - t0;
        spent += exchange(gw, dev, now, &acked);
    }
    iotseal_device_free(dev);
    iotseal_loopback_free(gw);
    if (acked != rounds * batch) {
        fprintf(stderr, "bench: C: %llu of %llu readings acknowledged\n",
                (unsigned long long)acked, (unsigned long long)(rounds * batch));
        exit(1);
    }
    return (double)acked / spent;
}

static double rust_rate(size_t batch, uint64_t rounds) {
    double seconds = 0;
    uint64_t acked = 0;
    iotseal_status s = iotseal_bench_rust_rate(batch, rounds, &seconds, &acked);
    if (s != IOTSEAL_OK) fail("iotseal_bench_rust_rate", s);
    if (acked != rounds * batch) {
        fprintf(stderr, "bench: Rust: %llu of %llu readings acknowledged\n",
                (unsigned long long)acked, (unsigned long long)(rounds * batch));
        exit(1);
    }
    return (double)acked / seconds;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(const double *v, int n) {
    double s[MAX_RUNS];
    memcpy(s, v, sizeof(double) * (size_t)n);
    qsort(s, (size_t)n, sizeof(double), cmp);
    return n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

int main(int argc, char **argv) {
    uint64_t readings = argc > 1 ? strtoull(argv[1], NULL, 10) : 200000;
    int repeat = argc > 2 ? atoi(argv[2]) : 7;
    if (readings == 0 || repeat < 1 || repeat > MAX_RUNS) {
        fprintf(stderr, "usage: bench [READINGS [REPEAT (1-%d)]]\n", MAX_RUNS);
        return 2;
    }
    struct utsname u;
    char date[32] = "?";
    time_t t = time(NULL);
    strftime(date, sizeof date, "%Y-%m-%d %H:%M UTC", gmtime(&t));
    uname(&u);
    printf("%s, %s %s, %s; medians of %d runs, readings/s on one core;\n"
           "C/Rust: median of each run's C/Rust pair\n",
           date, u.sysname, u.machine, iotseal_version(), repeat);
    printf("%5s %12s %12s %8s   %s\n", "batch", "Rust", "C", "C/Rust", "runs (Rust/C)");
    const size_t batches[] = {1, 100};
    for (int b = 0; b < 2; b++) {
        size_t batch = batches[b];
        uint64_t rounds = readings / batch ? readings / batch : 1;
        double rust[MAX_RUNS], c[MAX_RUNS], ratio[MAX_RUNS];
        for (int i = 0; i < repeat; i++) { /* interleaved */
            rust[i] = rust_rate(batch, rounds);
            c[i] = c_rate(batch, rounds);
            ratio[i] = c[i] / rust[i];
        }
        printf("%5zu %12.0f %12.0f %8.2f  ", batch, median(rust, repeat), median(c, repeat),
               median(ratio, repeat));
        for (int i = 0; i < repeat; i++) printf(" %.0f/%.0f", rust[i], c[i]);
        printf("\n");
    }
    return 0;
}
