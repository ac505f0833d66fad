/*
 * The vault: one data key per subject (a customer, for the commerce platform),
 * wrapped by a master key, for crypto-shredding. Data is sealed with the
 * subject's key (AES-256-GCM) into a text envelope that names the key; erasing
 * the subject destroys its key, so every envelope sealed with it becomes noise
 * while the records holding them stay where they are (an append-only log).
 *
 * Files (a directory, 0700, usually <data>/keys):
 *   master.key       the master key, 64 hex digits (0600), unless the master key
 *                    comes from the caller (AGORA_MASTER_KEY); created only when
 *                    the vault itself is new
 *   master.key.next  the new master key during a rotation (file mode)
 *   master.kid       the id of the master key the data keys are wrapped with: a
 *                    wrong master key is refused at open, never replaced
 *   dk-<subject>     a wrapped data key: "AGDK1\0", master kid (8), nonce (12),
 *                    ciphertext (32), tag (16); the subject is the GCM AAD
 *   er-<subject>     a tombstone: the subject was erased (no key is ever made again)
 *   index.key        the index key: 32 random bytes made with the vault (on the
 *                    first open of a vault that has none), wrapped like a data key
 *                    (AAD "$index"), re-wrapped by a rotation, never changed: the
 *                    HMAC key of names that must not reveal what they index (the
 *                    unique-email claims)
 *   lock             flock: shared while a data key is created, exclusive while a
 *                    rotation switches master keys
 *
 * Envelope (a string that can sit in JSON): "pii1:<subject>:<base64(nonce 12 |
 * ciphertext | tag 16)>", AAD = the subject.
 *
 * Thread-safe: unwrapped data keys are cached in memory under a lock; erasure
 * drops the cache entry before the file. Ownership: ag_vault_open returns a
 * handle freed with ag_vault_close; sealed and opened buffers are the caller's
 * (ag_free).
 */
#ifndef AGORA_VAULT_H
#define AGORA_VAULT_H

#include <stdbool.h>
#include <stddef.h>

#include "agora/base.h"

#define AG_VAULT_KEY_HEX 64 /* a master key as hex */
#define AG_VAULT_PREFIX  "pii1:"
#define AG_VAULT_MAC_LEN 32 /* HMAC-SHA256 */

struct ag_vault;

/* Open (creating on first use) the vault in `dir`. `master_hex` is the master
 * key (64 hex digits) or NULL to use <dir>/master.key, created only when the
 * vault has no data keys and no master.kid yet. A master key that does not
 * match the one the data keys are wrapped with, or a missing key file for an
 * existing vault, is AG_ECONFIG with a clear message. */
AG_EXTERN int ag_vault_open(const char *dir, const char *master_hex, struct ag_vault **out,
                            struct ag_err *err);
AG_EXTERN void ag_vault_close(struct ag_vault *v);

/* True when `s` (`n` bytes) is an envelope. */
AG_EXTERN bool ag_vault_is_envelope(const char *s, size_t n);
/* Seal `n` bytes with `subject`'s data key (made on first use): *out is a
 * NUL-terminated envelope (caller frees with ag_free). AG_EDOMAIN when the
 * subject was erased; AG_EINVAL for a subject that is not [A-Za-z0-9_-]{1,64}. */
AG_EXTERN int ag_vault_seal(struct ag_vault *v, const char *subject, const void *pt, size_t n,
                            char **out, struct ag_err *err);
/* Open envelope `env` (`n` bytes): *out (`*outn` bytes, NUL-terminated; caller
 * frees with ag_free). AG_ENOTFOUND when the subject's key is gone (erased),
 * AG_ECORRUPT when the envelope does not authenticate. */
AG_EXTERN int ag_vault_unseal(struct ag_vault *v, const char *env, size_t n, char **out,
                              size_t *outn, struct ag_err *err);
/* Destroy `subject`'s data key (idempotent): a tombstone first, then the key
 * file is overwritten, synced and unlinked. */
AG_EXTERN int ag_vault_erase(struct ag_vault *v, const char *subject, struct ag_err *err);
/* True when `subject` was erased. */
AG_EXTERN bool ag_vault_erased(struct ag_vault *v, const char *subject);

/* HMAC-SHA256 of `n` bytes under the vault's index key into out: a name for
 * an index entry that only a holder of the master key can link to its value. */
AG_EXTERN int ag_vault_index_mac(struct ag_vault *v, const void *data, size_t n,
                                 unsigned char out[AG_VAULT_MAC_LEN], struct ag_err *err);

/* Re-wrap every data key (and the index key) of the vault in `dir` under a new master key while a
 * server may be using it. `old_hex`: the current master key (NULL: master.key).
 * `new_hex`: the new one (NULL: generated and written to master.key, which
 * requires file mode; with the caller's keys no server may use the vault
 * meanwhile). A rotation interrupted half-way is finished by running it again.
 * AG_ENOTFOUND when `dir` holds no vault. `*count` (OUT) data keys re-wrapped. */
AG_EXTERN int ag_vault_rotate(const char *dir, const char *old_hex, const char *new_hex,
                              size_t *count, struct ag_err *err);

#endif
