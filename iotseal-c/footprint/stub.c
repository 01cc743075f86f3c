/* The baseline of docs/footprint.md: every iotseal function the example calls, as a stub, so that
 * examples/device.c linked with this file has the same C code and libcurl calls as the real
 * program but none of the library. (It does not run usefully: it only measures.) */
#include "iotseal.h"

enum iotseal_status iotseal_device_from_files(const char *p, const char *k, const struct iotseal_options *o,
                                              struct iotseal_device **out, char *e, size_t c) {
    (void)p, (void)k, (void)o, (void)e, (void)c;
    *out = (struct iotseal_device *)0;
    return IOTSEAL_OK;
}
enum iotseal_status iotseal_device_from_buffers(const uint8_t *p, size_t pl, const uint8_t *k, size_t kl,
                                                const struct iotseal_options *o, struct iotseal_device **out,
                                                char *e, size_t c) {
    (void)p, (void)pl, (void)k, (void)kl, (void)o, (void)e, (void)c;
    *out = (struct iotseal_device *)0;
    return IOTSEAL_OK;
}
void iotseal_device_free(struct iotseal_device *d) { (void)d; }
enum iotseal_status iotseal_last_error(const struct iotseal_device *d, char *b, size_t c) {
    (void)d, (void)c;
    b[0] = 0;
    return IOTSEAL_OK;
}
enum iotseal_status iotseal_gateway_url(struct iotseal_device *d, char *b, size_t c, size_t *l) {
    (void)d, (void)c, (void)l;
    b[0] = 0;
    return IOTSEAL_OK;
}
enum iotseal_status iotseal_gateway_curl_pin(struct iotseal_device *d, char *b, size_t c, size_t *l) {
    (void)d, (void)c, (void)l;
    b[0] = 0;
    return IOTSEAL_OK;
}
enum iotseal_status iotseal_push(struct iotseal_device *d, uint64_t n, const uint8_t *k, const float *v,
                                 size_t c, uint64_t *id) {
    (void)d, (void)n, (void)k, (void)v, (void)c, (void)id;
    return IOTSEAL_OK;
}
enum iotseal_status iotseal_poll_transmit(struct iotseal_device *d, uint64_t n, enum iotseal_endpoint *e,
                                          uint8_t *b, size_t c, size_t *l) {
    (void)d, (void)n, (void)b, (void)c;
    *e = IOTSEAL_ENDPOINT_RECORDS;
    *l = 0;
    return IOTSEAL_NONE;
}
enum iotseal_status iotseal_handle_response(struct iotseal_device *d, uint64_t n, uint16_t s, const uint8_t *b,
                                            size_t l, uint32_t r) {
    (void)d, (void)n, (void)s, (void)b, (void)l, (void)r;
    return IOTSEAL_OK;
}
enum iotseal_status iotseal_handle_transport_error(struct iotseal_device *d, uint64_t n) {
    (void)d, (void)n;
    return IOTSEAL_OK;
}
enum iotseal_status iotseal_poll_timeout(const struct iotseal_device *d, uint64_t *t) {
    (void)d, (void)t;
    return IOTSEAL_NONE;
}
enum iotseal_status iotseal_poll_event(struct iotseal_device *d, struct iotseal_event *e) {
    (void)d, (void)e;
    return IOTSEAL_NONE;
}
const char *iotseal_endpoint_path(int32_t e) { return e == 1 ? "/v1/handshake" : "/v1/records"; }
const char *iotseal_status_name(int32_t s) { (void)s; return ""; }
const char *iotseal_refusal_name(uint8_t c) { (void)c; return ""; }
enum iotseal_status iotseal_device_from_raw(const struct iotseal_raw_config *r, const struct iotseal_options *o,
                                            struct iotseal_device **out, char *e, size_t c) {
    (void)r, (void)o, (void)e, (void)c;
    *out = (struct iotseal_device *)0;
    return IOTSEAL_OK;
}
