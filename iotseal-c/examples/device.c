/* device: sends COUNT readings (temperature and humidity) to an iotseal gateway over HTTPS.
 *
 *   device PINS_FILE KEY_FILE COUNT [GATEWAY_URL]
 *
 * libiotseal does the protocol (handshake, sealing, acknowledgements, retries, backoff); this
 * program moves its requests with libcurl and keeps the time. Exit status: 0 once every
 * reading is acknowledged; 1 on a refusal, a certificate that does not match the pins file,
 * or after 60 s; 2 on bad arguments or files. */
#define _POSIX_C_SOURCE 200809L
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "iotseal.h"

#define TIMEOUT_MS 60000u
#define INTERVAL_MS 20u        /* a reading every 20 ms */
#define MAX_ANSWER (1u << 20)  /* answers are read up to 1 MiB, as the Rust SDK does */

struct answer { uint8_t *data; size_t len; uint32_t retry_after; };

static uint64_t now_ms(void) {  /* Unix time: the protocol's clock (docs/protocol.md §10) */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void sleep_ms(uint64_t ms) {
    struct timespec ts = { (time_t)(ms / 1000u), (long)(ms % 1000u) * 1000000L };
    nanosleep(&ts, NULL);
}

static size_t on_body(char *p, size_t size, size_t n, void *user) {
    struct answer *a = user;
    size_t add = size * n;
    if (add > MAX_ANSWER - a->len) return 0;  /* too large: the transfer fails */
    uint8_t *grown = realloc(a->data, a->len + add);
    if (grown == NULL) return 0;
    memcpy(grown + a->len, p, add);
    a->data = grown;
    a->len += add;
    return add;
}

static size_t on_header(char *p, size_t size, size_t n, void *user) {
    struct answer *a = user;
    if (size * n > 12 && strncasecmp(p, "Retry-After:", 12) == 0)
        a->retry_after = (uint32_t)strtoul(p + 12, NULL, 10);
    return size * n;
}

static int fail(iotseal_device *dev, const char *what, iotseal_status st) {
    char msg[256] = "";
    iotseal_last_error(dev, msg, sizeof msg);
    fprintf(stderr, "device: %s: %s: %s\n", what, iotseal_status_name(st), msg);
    return 2;
}

int main(int argc, char **argv) {
    if (argc < 4 || argc > 5 || atol(argv[3]) <= 0) {
        fprintf(stderr, "usage: %s PINS_FILE KEY_FILE COUNT [GATEWAY_URL]\n", argv[0]);
        return 2;
    }
    const long count = atol(argv[3]);
    /* Message ids must never repeat for a device (the gateway stores each id once). This
     * program keeps no state, so its ids start from the clock: 1000 per ms between runs. */
    iotseal_options opts = {0};
    opts.first_msg_id = now_ms() * 1000u;
    iotseal_device *dev = NULL;
    char err[256], url[512], pin[128], target[600];
    iotseal_status st = iotseal_device_from_files(argv[1], argv[2], &opts, &dev, err, sizeof err);
    if (st != IOTSEAL_OK) { fprintf(stderr, "device: %s\n", err); return 2; }
    if ((st = iotseal_gateway_url(dev, url, sizeof url, NULL)) != IOTSEAL_OK) return fail(dev, "url", st);
    if (argc == 5) snprintf(url, sizeof url, "%s", argv[4]);
    if ((st = iotseal_gateway_curl_pin(dev, pin, sizeof pin, NULL)) != IOTSEAL_OK) return fail(dev, "pin", st);

    curl_global_init(CURL_GLOBAL_DEFAULT);
    CURL *curl = curl_easy_init();
    struct curl_slist *headers = curl_slist_append(NULL, "Content-Type: application/octet-stream");
    headers = curl_slist_append(headers, "Expect:");  /* no 100-continue round trip */
    struct answer ans = { NULL, 0, 0 };
    /* The pin is the gateway's TLS identity (docs/protocol.md §18.2): no CA chain, no host
     * name. curl enforces CURLOPT_PINNEDPUBLICKEY even with VERIFYPEER off, so turning that
     * off only drops the CA check, which a self-signed certificate cannot pass. */
    curl_easy_setopt(curl, CURLOPT_PINNEDPUBLICKEY, pin);
    curl_easy_setopt(curl, CURLOPT_SSL_VERIFYPEER, 0L);
    curl_easy_setopt(curl, CURLOPT_SSL_VERIFYHOST, 0L);
    curl_easy_setopt(curl, CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_3);
    curl_easy_setopt(curl, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    curl_easy_setopt(curl, CURLOPT_TCP_KEEPALIVE, 1L);  /* one connection, reused */
    curl_easy_setopt(curl, CURLOPT_MAXAGE_CONN, 20L);   /* the gateway drops idle ones at 30 s */
    curl_easy_setopt(curl, CURLOPT_TIMEOUT, 10L);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &ans);
    curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(curl, CURLOPT_HEADERDATA, &ans);

    size_t cap = 4096, len = 0;
    uint8_t *buf = malloc(cap);
    long pushed = 0, acked = 0;
    int rc = 1;
    const uint64_t start = now_ms();
    uint64_t next_reading = start;
    while (buf != NULL && acked < count) {
        uint64_t now = now_ms();
        if (now - start > TIMEOUT_MS) {
            fprintf(stderr, "device: timeout: %ld of %ld readings acknowledged\n", acked, count);
            goto out;
        }
        if (pushed < count && now >= next_reading) {
            const uint8_t kinds[2] = { IOTSEAL_SENSOR_TEMPERATURE, IOTSEAL_SENSOR_HUMIDITY };
            const float values[2] = { 20.0f + (float)pushed * 0.25f, 40.0f + (float)(pushed % 20) };
            st = iotseal_push(dev, now, kinds, values, 2, NULL);
            if (st == IOTSEAL_OK) { pushed++; next_reading += INTERVAL_MS; }
            else if (st != IOTSEAL_ERR_QUEUE_FULL) { rc = fail(dev, "push", st); goto out; }
        }
        iotseal_endpoint ep;
        st = iotseal_poll_transmit(dev, now, &ep, buf, cap, &len);
        if (st == IOTSEAL_ERR_BUFFER_TOO_SMALL) {  /* the same request again, larger buffer */
            uint8_t *grown = realloc(buf, len);
            if (grown == NULL) goto out;
            buf = grown;
            cap = len;
            continue;
        }
        if (st == IOTSEAL_OK) {
            snprintf(target, sizeof target, "%s%s", url, iotseal_endpoint_path(ep));
            curl_easy_setopt(curl, CURLOPT_URL, target);
            curl_easy_setopt(curl, CURLOPT_POSTFIELDS, buf);
            curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, (long)len);
            ans.len = 0;
            ans.retry_after = 0;
            CURLcode res = curl_easy_perform(curl);
            long status = 0;
            curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
            if (res == CURLE_SSL_PINNEDPUBKEYNOTMATCH) {  /* retrying cannot fix this */
                fprintf(stderr, "device: the gateway's TLS certificate does not match the pins file\n");
                goto out;
            }
            if (res == CURLE_OK)
                iotseal_handle_response(dev, now_ms(), (uint16_t)status, ans.data, ans.len, ans.retry_after);
            else
                iotseal_handle_transport_error(dev, now_ms());
        } else if (st != IOTSEAL_NONE) {
            rc = fail(dev, "poll_transmit", st);
            goto out;
        }
        iotseal_event ev;
        while (iotseal_poll_event(dev, &ev) == IOTSEAL_OK) {
            if (ev.kind == IOTSEAL_EVENT_ACKNOWLEDGED) acked += (long)ev.count;
            if (ev.kind == IOTSEAL_EVENT_REFUSED) {
                fprintf(stderr, "device: refused by the gateway: %s\n", iotseal_refusal_name(ev.refusal));
                goto out;
            }
        }
        if (st == IOTSEAL_NONE) {  /* nothing to send: sleep until a reading or a deadline */
            uint64_t wake = pushed < count ? next_reading : now + 50, deadline;
            if (iotseal_poll_timeout(dev, &deadline) == IOTSEAL_OK && deadline < wake) wake = deadline;
            now = now_ms();
            if (wake > now) sleep_ms(wake - now < 50 ? wake - now : 50);
        }
    }
    printf("device: %ld readings acknowledged\n", acked);
    rc = buf != NULL ? 0 : 1;
out:
    free(buf);
    free(ans.data);
    curl_slist_free_all(headers);
    curl_easy_cleanup(curl);
    curl_global_cleanup();
    iotseal_device_free(dev);
    return rc;
}
