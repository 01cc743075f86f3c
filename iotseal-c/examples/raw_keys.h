/* The firmware variant of device.c, for the library built without std (docs/footprint.md):
 *   cc ... -include raw_keys.h device.c   (make -C iotseal-c/examples CFLAGS=-DIOTSEAL_FROM_RAW)
 * Keys as bytes, as a device holds them in flash, instead of key files; randomness from the
 * program (a device: its hardware RNG). device.c is unchanged: its three key-file calls are
 * mapped onto iotseal_device_from_raw, and its arguments keep their places:
 *   device GATEWAY KEY COUNT [GATEWAY_URL]
 *   GATEWAY = URL,CURL_PIN,GATEWAY_PUBLIC_KEY_HEX   KEY = DEVICE_ID,PRIVATE_KEY_HEX (Ed25519) */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include "iotseal.h"

static char raw_url[512], raw_pin[128];

/* The library's random source. */
static int32_t raw_random(void *ctx, uint8_t *buf, size_t len) {
    (void)ctx;
    while (len > 0) {
        ssize_t n = getrandom(buf, len, 0);
        if (n <= 0) return -1;
        buf += n, len -= (size_t)n;
    }
    return 0;
}

/* Hex (up to the next comma or the end) to bytes: the length, or 0 if not hex or too long. */
static size_t raw_unhex(const char *s, uint8_t *out, size_t cap) {
    size_t digits = strcspn(s, ","), n = digits / 2;
    if (digits % 2 || n > cap) return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        if (sscanf(s + 2 * i, "%2x", &v) != 1) return 0;
        out[i] = (uint8_t)v;
    }
    return n;
}

/* Copies the next comma-separated field of *s into out; advances *s past it. */
static int raw_field(const char **s, char *out, size_t cap) {
    size_t n = strcspn(*s, ",");
    if (n >= cap || (*s)[n] != ',') return -1;
    memcpy(out, *s, n), out[n] = 0, *s += n + 1;
    return 0;
}

/* In place of iotseal_device_from_files(pins_path, key_path, ...). */
static iotseal_status raw_from_args(const char *gateway, const char *key, const iotseal_options *opts,
                                    iotseal_device **dev, char *err, size_t err_cap) {
    uint8_t private_key[64], gateway_key[64];
    char id[64];
    iotseal_pinned_key pinned = { .alg = IOTSEAL_SIG_ED25519, .public_key = gateway_key };
    iotseal_raw_config raw = { .alg = IOTSEAL_SIG_ED25519, .private_key = private_key,
                               .pins = &pinned, .pins_len = 1, .random = raw_random };
    if (raw_field(&gateway, raw_url, sizeof raw_url) || raw_field(&gateway, raw_pin, sizeof raw_pin) ||
        raw_field(&key, id, sizeof id)) {
        snprintf(err, err_cap, "expected GATEWAY = URL,CURL_PIN,KEY_HEX and KEY = DEVICE_ID,KEY_HEX");
        return IOTSEAL_ERR_INVALID_ARGUMENT;
    }
    raw.device_id = (const uint8_t *)id, raw.device_id_len = strlen(id);
    raw.private_key_len = raw_unhex(key, private_key, sizeof private_key);
    pinned.public_key_len = raw_unhex(gateway, gateway_key, sizeof gateway_key);
    iotseal_status st = iotseal_device_from_raw(&raw, opts, dev, err, err_cap);
    memset(private_key, 0, sizeof private_key);  /* the caller's copy: wiped */
    return st;
}

/* In place of iotseal_gateway_url and iotseal_gateway_curl_pin: what GATEWAY named. */
static iotseal_status raw_copy(const char *from, char *out, size_t cap, size_t *len) {
    if (len != NULL) *len = strlen(from);
    if (strlen(from) >= cap) return IOTSEAL_ERR_BUFFER_TOO_SMALL;
    memcpy(out, from, strlen(from) + 1);
    return IOTSEAL_OK;
}

#define iotseal_device_from_files raw_from_args
#define iotseal_gateway_url(dev, out, cap, len) ((void)(dev), raw_copy(raw_url, out, cap, len))
#define iotseal_gateway_curl_pin(dev, out, cap, len) ((void)(dev), raw_copy(raw_pin, out, cap, len))
