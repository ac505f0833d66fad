/*
 * Private helpers shared by the domain's aggregates: bounded string copies, typed
 * reads of event fields (every getter returns AG_EINVAL on a missing or mistyped
 * field, so evolve never trusts the shape of recorded data), the order-id map and
 * pushing a new event with an out-of-memory message.
 */
#ifndef AGORA_DOMAIN_INTERNAL_H
#define AGORA_DOMAIN_INTERNAL_H

#include "agora/domain.h"

/* Copy `src` into dst[cap]; AG_EINVAL when NULL, empty or too long. */
int ag__dom_copy(char *dst, size_t cap, const char *src);
/* Same, but NULL/empty give `dflt` (which must fit). */
int ag__dom_copy_or(char *dst, size_t cap, const char *src, const char *dflt);
/* Command-side check of a required string: AG_EINVAL "<what> must be a non-empty
 * string of at most cap-1 bytes" (also when not valid UTF-8). */
int ag__dom_need(char *dst, size_t cap, const char *src, const char *what, struct ag_err *err);

/* A free-text reason: `src` cut to fit dst[cap] on a UTF-8 boundary; NULL, empty
 * or invalid UTF-8 give `dflt`. Never fails, so compensations never trip on it. */
void ag__dom_reason(char *dst, size_t cap, const char *src, const char *dflt);

/* Check an address given by a command (non-empty NUL-terminated UTF-8 fields,
 * country code); AG_EINVAL naming "<pointer>/<field>". */
int ag__dom_address_check(const struct ag_address *a, const char *pointer, struct ag_err *err);

/* ---- reading event data ---- */

int ag__dom_get_str(const json_t *o, const char *key, char *dst, size_t cap);
/* Optional string: absent or null → "" (a present non-string is AG_EINVAL). */
int ag__dom_get_str_opt(const json_t *o, const char *key, char *dst, size_t cap);
int ag__dom_get_i64(const json_t *o, const char *key, int64_t *out);
int ag__dom_get_bool(const json_t *o, const char *key, bool *out);
int ag__dom_get_money(const json_t *o, const char *key, struct ag_money *out);
int ag__dom_get_address(const json_t *o, const char *key, struct ag_address *out);

/* Push an event; on failure (data NULL included: json_pack failed) sets err to
 * AG_ENOMEM ("out of memory building T"). Text reaching json_pack is checked first. */
int ag__dom_emit(struct ag_dom_events *out, const char *type, json_t *data, struct ag_err *err);

/* ---- the order-id map ---- */

void ag__idmap_init(struct ag_dom_idmap *m);
void ag__idmap_free(struct ag_dom_idmap *m);
/* The slot for key, or NULL. */
struct ag_dom_idmap_slot *ag__idmap_get(const struct ag_dom_idmap *m, const char *key);
/* Insert or overwrite; AG_EINVAL for an empty/too long key, AG_ENOMEM. */
int ag__idmap_put(struct ag_dom_idmap *m, const char *key, int64_t value, bool flag);
/* Remove key if present. */
void ag__idmap_del(struct ag_dom_idmap *m, const char *key);

#endif
