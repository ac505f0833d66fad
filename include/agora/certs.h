/*
 * The cluster's certificates (issue 14, mTLS; src/http/certs.c, OpenSSL's C API):
 * a certificate authority kept in a directory and the member certificates it
 * issues, for `agora serve` instances and `agora gateway` to authenticate each
 * other (include/agora/http.h: ag_tls_server_config.client_ca_file and
 * ag_tls_client_config.cert_file).
 *
 * Files in the CA's directory (created 0700): ca.pem (the CA's self-signed
 * certificate, the trust anchor every member is given) and ca.key (its private
 * key, 0600, needed only to issue). A member NAME gets NAME.pem (its certificate)
 * and NAME.key (0600). Every key is EC P-256; every file is written to a
 * temporary name and renamed into place, so a process watching it never reads
 * half a file. Nothing here keeps state between calls.
 */
#ifndef AGORA_CERTS_H
#define AGORA_CERTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "agora/base.h"
#include "agora/error.h"

#define AG_CERTS_NAME_MAX 64   /* a member's name: [A-Za-z0-9._-], not starting with '.' */
#define AG_CERTS_DAYS     30   /* a member certificate's default validity */
#define AG_CERTS_CA_DAYS  3650 /* the CA's validity */
#define AG_CERTS_SKEW_S   300  /* a member's default notBefore is this far back (clock skew) */
#define AG_CERTS_MAX_SANS 16   /* IP addresses + DNS names per member */

/* Create the CA in dir (the directory too, 0700) unless ca.pem and ca.key are there;
 * when they are, check that they load, belong together and make a CA. *created (may
 * be NULL) says which. AG_ECONFIG naming the file when one is there without the
 * other, unreadable, or the key does not match; AG_EIO on a write error. */
AG_EXTERN int ag_certs_init(const char *dir, bool *created, struct ag_err *err);

struct ag_certs_member {
    const char *name;       /* the subject's CN and the files' stem */
    const char *const *ips; /* subjectAltName IP addresses (v4 or v6), borrowed */
    size_t nips;
    const char *const *dns; /* subjectAltName DNS names; none and no ips = {name} */
    size_t ndns;
    uint32_t days;       /* validity from not_before; 0 = AG_CERTS_DAYS */
    int64_t not_before;  /* Unix seconds; 0 = now - AG_CERTS_SKEW_S */
    const char *out_dir; /* where NAME.pem / NAME.key go; NULL = the CA's dir */
};

/* Issue a member certificate signed by the CA in ca_dir: a new key, usage digital
 * signature, extended usage serverAuth + clientAuth (one certificate serves and
 * calls), the SANs given. Replaces NAME.pem and NAME.key (a rotation: the
 * processes using them re-read them, see ag_tls_server_new). AG_EINVAL for a bad
 * name, IP or DNS name; AG_ECONFIG when the CA cannot be loaded or its key does
 * not match it; AG_EIO on a write error. The paths written go to cert_out/key_out
 * (each may be NULL; `n` bytes each). */
AG_EXTERN int ag_certs_issue(const char *ca_dir, const struct ag_certs_member *m, char *cert_out,
                             char *key_out, size_t n, struct ag_err *err);

/* Check that cert_file chains to the CA in ca_file at time `at` (Unix seconds; 0 =
 * now) for TLS client and server use; its subject's one-line text into subject (may
 * be NULL; `n` bytes). AG_ECONFIG with OpenSSL's reason ("certificate has expired",
 * "unable to get local issuer certificate", ...) when it does not. */
AG_EXTERN int ag_certs_verify(const char *ca_file, const char *cert_file, int64_t at, char *subject,
                              size_t n, struct ag_err *err);

#endif
