/* The agora command line: subcommand table and shared option helpers. */
#ifndef AGORA_CLI_H
#define AGORA_CLI_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "agora/error.h"
#include "agora/http.h"

struct ag_cli_cmd {
    const char *name;                  /* "store", "version", ... */
    const char *summary;               /* one line for `agora --help` */
    int (*run)(int argc, char **argv); /* argv[0] is the subcommand name; returns exit code */
};

/* True if argv holds -h or --help (before a "--"). */
bool ag_cli_wants_help(int argc, char **argv);
/* Print "agora: <msg>" to stderr and return the usage exit code (2). */
int ag_cli_usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Print the top-level help to stdout; returns 0. */
int ag_cli_print_help(void);

extern const struct ag_cli_cmd ag_cli_cmd_version;
extern const struct ag_cli_cmd ag_cli_cmd_store;
extern const struct ag_cli_cmd ag_cli_cmd_run;
extern const struct ag_cli_cmd ag_cli_cmd_serve;
extern const struct ag_cli_cmd ag_cli_cmd_cluster;
extern const struct ag_cli_cmd ag_cli_cmd_backup;
extern const struct ag_cli_cmd ag_cli_cmd_restore;
extern const struct ag_cli_cmd ag_cli_cmd_projections;
extern const struct ag_cli_cmd ag_cli_cmd_gateway, ag_cli_cmd_token;
extern const struct ag_cli_cmd ag_cli_cmd_load;
extern const struct ag_cli_cmd ag_cli_cmd_mcp;
extern const struct ag_cli_cmd ag_cli_cmd_keys;
extern const struct ag_cli_cmd ag_cli_cmd_dlq;
extern const struct ag_cli_cmd ag_cli_cmd_console_url;
extern const struct ag_cli_cmd ag_cli_cmd_certs;
/* The development JWT secret: AGORA_JWT_SECRET, else DATA/jwt-secret (created when
 * `create`). out holds 32..64 characters. */
int ag_cli_jwt_secret(const char *data_dir, bool create, char out[65], struct ag_err *err);
/* The gateway configuration agora run serves with (owned, ag_free). */
char *ag_cli_run_gateway_yaml(const char *listen, const char *secret, const char *upstream);
/* Its `jwt:` section (issuer agora-dev, audience agora, HS256 with `secret`), so
 * `agora token --data DIR` mints tokens it accepts; `agora cluster up`'s too. */
int ag_cli_jwt_yaml(struct ag_buf *b, const char *secret);

/* --tls-cert FILE / --tls-key FILE (paired in order, repeatable for SNI) and
 * --http-redirect HOST:PORT, shared by `agora run` and `agora gateway`. */
#define AG_CLI_TLS_MAX 8
struct ag_cli_tls {
    struct ag_tls_cert certs[AG_CLI_TLS_MAX]; /* pairs; borrowed from argv */
    size_t ncert, nkey;                       /* --tls-cert and --tls-key seen */
    const char *redirect;                     /* --http-redirect or NULL */
};
/* 1 when argv[*i] is one of those options (consumed, *i advanced), 0 when not,
 * -1 after printing a usage error. */
int ag_cli_tls_arg(int argc, char **argv, int *i, struct ag_cli_tls *t, const char *cmd);
/* 0 when the pairs are complete, else -1 after printing a usage error. */
int ag_cli_tls_check(const struct ag_cli_tls *t, const char *cmd);
/* True for a loopback address (127.0.0.0/8, ::1, localhost). */
bool ag_cli_loopback(const char *host);
/* The mesh key from env AGORA_MESH_KEY (cmd_serve.c), or NULL when unset or empty. */
const char *ag_cli_mesh_key(void);
/* "24h", "90m", "3600s", "7d", "500ms" or bare seconds in ms; 0 when malformed or zero. */
uint64_t ag_cli_duration_ms(const char *s);

/* `agora store stats --by-type` (store_sizes.c): events and bytes per order, per
 * event type, per stream kind and in the latest snapshots, as JSON lines. */
struct ag_store;
int ag_cli_store_sizes(struct ag_store *s, const char *dir);

#endif
