/* device PINS_FILE KEY_FILE COUNT [GATEWAY_URL]: sends COUNT readings (temperature, humidity)
 * to an iotseal gateway over HTTPS. libiotseal does the protocol (handshake, sealing, acks,
 * retries, backoff); this program moves its requests with libcurl and keeps the time. Exit 0
 * once all are acknowledged; 1 on a refusal, pin mismatch, error or 60 s; 2 on bad input. */
#define _POSIX_C_SOURCE 200809L
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include "iotseal.h"

#define TIMEOUT_MS 60000u
#define INTERVAL_MS 20u  /* a reading every 20 ms */

struct answer { uint8_t data[65536]; size_t len; uint32_t retry_after; };  /* answers: a few KiB */

static uint64_t now_ms(void) {  /* Unix time: the protocol's clock (docs/protocol.md §10) */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static size_t on_body(char *p, size_t size, size_t n, void *user) {
    struct answer *a = user;
    size_t add = size * n;
    if (add > sizeof a->data - a->len) return 0;  /* too large: the transfer fails */
    memcpy(a->data + a->len, p, add);
    a->len += add;
    return add;
}

static size_t on_header(char *p, size_t size, size_t n, void *user) {
    struct answer *a = user;
    if (size * n > 12 && strncasecmp(p, "Retry-After:", 12) == 0)
        a->retry_after = (uint32_t)strtoul(p + 12, NULL, 10);
    return size * n;
}

/* POSTs one request and hands its outcome to the library; -1 if retrying cannot help. */
static int post(CURL *curl, iotseal_device *dev, const char *url, iotseal_endpoint ep,
                const uint8_t *body, size_t len, struct answer *ans) {
    char target[600];
    snprintf(target, sizeof target, "%s%s", url, iotseal_endpoint_path(ep));
    curl_easy_setopt(curl, CURLOPT_URL, target);
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, (long)len);
    ans->len = 0, ans->retry_after = 0;
    CURLcode res = curl_easy_perform(curl);
    long status = 0;
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
    if (res == CURLE_SSL_PINNEDPUBKEYNOTMATCH) {
        fprintf(stderr, "device: the gateway's TLS certificate does not match the pins file\n");
        return -1;
    }
    if (res != CURLE_OK) iotseal_handle_transport_error(dev, now_ms());  /* no answer */
    else iotseal_handle_response(dev, now_ms(), (uint16_t)status, ans->data, ans->len, ans->retry_after);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 4 || argc > 5 || atol(argv[3]) <= 0) {
        fprintf(stderr, "usage: %s PINS_FILE KEY_FILE COUNT [GATEWAY_URL]\n", argv[0]);
        return 2;
    }
    const long count = atol(argv[3]);
    long pushed = 0, acked = 0, rc = 2;
    static struct answer ans;
    char err[256], url[512], pin[128];
    size_t cap = 4096, len = 0;
    uint8_t *buf = malloc(cap);
    /* Message ids must never repeat for a device (the gateway stores each id once). This
     * program keeps no state, so its ids start from the clock: 1000 per ms between runs. */
    iotseal_options opts = { .first_msg_id = now_ms() * 1000u };  /* other fields: defaults */
    iotseal_device *dev = NULL;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    CURL *curl = curl_easy_init();
    struct curl_slist *headers = curl_slist_append(NULL, "Content-Type: application/octet-stream");
    headers = curl_slist_append(headers, "Expect:");  /* no 100-continue round trip */
    iotseal_status st = iotseal_device_from_files(argv[1], argv[2], &opts, &dev, err, sizeof err);
    if (st != IOTSEAL_OK) { fprintf(stderr, "device: %s\n", err); goto out; }
    if ((st = iotseal_gateway_url(dev, url, sizeof url, NULL)) != IOTSEAL_OK ||
        (st = iotseal_gateway_curl_pin(dev, pin, sizeof pin, NULL)) != IOTSEAL_OK) goto fail;
    if (argc == 5) snprintf(url, sizeof url, "%s", argv[4]);
    /* The pin is the gateway's TLS identity (protocol.md §18.2: no CA, no host name). curl
     * enforces it even with VERIFYPEER off, which drops only the CA check (self-signed). */
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
    rc = 1;
    const uint64_t start = now_ms();
    uint64_t next_reading = start;
    while (buf != NULL && acked < count && now_ms() - start < TIMEOUT_MS) {
        uint64_t now = now_ms(), wake, deadline;
        iotseal_endpoint ep;
        iotseal_event ev;
        if (pushed < count && now >= next_reading) {
            const uint8_t kinds[2] = { IOTSEAL_SENSOR_TEMPERATURE, IOTSEAL_SENSOR_HUMIDITY };
            const float values[2] = { 20.0f + (float)pushed * 0.25f, 40.0f + (float)(pushed % 20) };
            st = iotseal_push(dev, now, kinds, values, 2, NULL);
            if (st == IOTSEAL_OK) pushed++, next_reading += INTERVAL_MS;
            else if (st != IOTSEAL_ERR_QUEUE_FULL) goto fail;
        }
        st = iotseal_poll_transmit(dev, now, &ep, buf, cap, &len);
        if (st == IOTSEAL_ERR_BUFFER_TOO_SMALL) {  /* the same request again, larger buffer */
            uint8_t *grown = realloc(buf, len);
            if (grown == NULL) goto out;
            buf = grown, cap = len;
            continue;
        }
        if (st != IOTSEAL_OK && st != IOTSEAL_NONE) goto fail;
        if (st == IOTSEAL_OK && post(curl, dev, url, ep, buf, len, &ans) < 0) goto out;
        while (iotseal_poll_event(dev, &ev) == IOTSEAL_OK) {
            if (ev.kind == IOTSEAL_EVENT_ACKNOWLEDGED) acked += (long)ev.count;
            if (ev.kind != IOTSEAL_EVENT_REFUSED) continue;
            fprintf(stderr, "device: refused by the gateway: %s\n", iotseal_refusal_name(ev.refusal));
            goto out;
        }
        if (st == IOTSEAL_OK) continue;  /* nothing sent: sleep until a reading or a deadline */
        wake = pushed < count ? next_reading : now + 50;
        if (iotseal_poll_timeout(dev, &deadline) == IOTSEAL_OK && deadline < wake) wake = deadline;
        now = now_ms();
        wake = wake > now + 50 ? 50 : wake > now ? wake - now : 0;  /* at most 50 ms */
        nanosleep(&(struct timespec){ 0, (long)wake * 1000000L }, NULL);
    }
    if (acked < count) fprintf(stderr, "device: %ld of %ld readings acknowledged in time\n", acked, count);
    else printf("device: %ld readings acknowledged\n", acked), rc = 0;
    goto out;
fail:
    iotseal_last_error(dev, err, sizeof err);
    fprintf(stderr, "device: %s: %s\n", iotseal_status_name(st), err);
out:
    free(buf);
    curl_slist_free_all(headers);
    curl_easy_cleanup(curl);
    curl_global_cleanup();
    iotseal_device_free(dev);  /* wipes the keys */
    return (int)rc;
}
