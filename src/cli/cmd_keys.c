/*
 * agora keys: the master key of the personal-data vault (<data>/keys, see
 * include/agora/vault.h). `rotate` re-wraps every customer's data key under a new
 * master key; it runs beside a serving `agora run` on the same data directory
 * (the vault's lock and the server's re-reading of the key files make that safe).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agora/vault.h"
#include "cli/cli.h"

static const char usage_text[] =
    "usage: agora keys rotate [--data DIR]\n"
    "\n"
    "Re-wrap every customer data key (and the index key of the email claims,\n"
    "whose value stays) under a new master key, while agora run serves. With the\n"
    "key file (DIR/keys/master.key, the default) the new key is\n"
    "generated and replaces the file. With AGORA_MASTER_KEY, stop agora run first,\n"
    "give the new key in AGORA_NEW_MASTER_KEY (64 hex digits) and start again with\n"
    "it as AGORA_MASTER_KEY (a server cannot learn a key kept out of the data\n"
    "directory). An interrupted rotation is finished by running it again.\n"
    "\n"
    "  --data DIR   agora run's data directory (default ./data, env AGORA_DATA)\n";

static int rotate(const char *data)
{
    char dir[4096];
    if ((size_t)snprintf(dir, sizeof dir, "%s/keys", data) >= sizeof dir)
        return ag_cli_usage_error("keys: the data directory's path is too long");
    struct ag_err err;
    ag_err_clear(&err);
    size_t n = 0;
    int rc =
        ag_vault_rotate(dir, getenv("AGORA_MASTER_KEY"), getenv("AGORA_NEW_MASTER_KEY"), &n, &err);
    if (rc) {
        fprintf(stderr, "agora keys rotate: %s\n", ag_err_msg(&err, rc));
        return 1;
    }
    printf("re-wrapped %zu data keys under the new master key in %s\n", n, dir);
    return 0;
}

static int run(int argc, char **argv)
{
    if (ag_cli_wants_help(argc, argv) || argc < 2) {
        fputs(usage_text, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *data = getenv("AGORA_DATA") ? getenv("AGORA_DATA") : "./data";
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--data") == 0 && i + 1 < argc)
            data = argv[++i];
        else
            return ag_cli_usage_error("keys: unknown or incomplete option '%s'", argv[i]);
    }
    if (strcmp(argv[1], "rotate") == 0) return rotate(data);
    return ag_cli_usage_error("keys: unknown subcommand '%s' (see 'agora keys --help')", argv[1]);
}

const struct ag_cli_cmd ag_cli_cmd_keys = {"keys", "rotate the master key of personal data", run};
