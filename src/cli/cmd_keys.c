/*
 * agora keys: the master key of the personal-data vault (<data>/keys, see
 * include/agora/vault.h). `rotate` re-wraps every customer's data key under a new
 * master key; it runs beside a serving `agora run` on the same data directory
 * (the vault's lock and the server's re-reading of the key files make that safe).
 * With the caller's master key (AGORA_MASTER_KEY) a server cannot follow, so the
 * rotation holds the store's writer lock and is refused while agora run serves.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "agora/vault.h"
#include "cli/cli.h"

static const char usage_text[] =
    "usage: agora keys rotate [--data DIR]\n"
    "\n"
    "Re-wrap every customer data key (and the index key of the email claims,\n"
    "whose value stays) under a new master key, while agora run serves. With the\n"
    "key file (DIR/keys/master.key, the default) the new key is\n"
    "generated and replaces the file. With AGORA_MASTER_KEY, stop agora run first\n"
    "(a rotation refuses to run beside it, and keeps it from starting meanwhile),\n"
    "give the new key in AGORA_NEW_MASTER_KEY (64 hex digits) and start again with\n"
    "it as AGORA_MASTER_KEY (a server cannot learn a key kept out of the data\n"
    "directory). An interrupted rotation is finished by running it again.\n"
    "\n"
    "  --data DIR   agora run's data directory (default ./data, env AGORA_DATA)\n";

/* With the caller's keys no server may use the vault while it rotates (it would
 * go on wrapping new data keys with the old key, which the new one cannot open):
 * hold the embedded store's writer lock (DATA/LOCK) meanwhile, so a serving
 * `agora run` is refused and none starts. -1 (refused, said why) or the lock's
 * fd (or -2 when DATA has no embedded store) to close afterwards. */
static int hold_store(const char *data)
{
    char p[4200];
    snprintf(p, sizeof p, "%s/LOCK", data);
    int fd = open(p, O_RDWR | O_CLOEXEC);
    if (fd < 0) return -2;
    if (flock(fd, LOCK_EX | LOCK_NB) == 0) return fd;
    char pid[32] = {0};
    ssize_t n = pread(fd, pid, sizeof pid - 1, 0);
    while (n > 0 && (pid[n - 1] == '\n' || pid[n - 1] == ' ')) pid[--n] = 0;
    close(fd);
    fprintf(stderr,
            "agora keys rotate: agora (pid %s) serves %s: with AGORA_MASTER_KEY it cannot learn "
            "the new key, so stop it first, rotate, and start it again with the new key as "
            "AGORA_MASTER_KEY\n",
            n > 0 ? pid : "unknown", data);
    return -1;
}

static int rotate(const char *data)
{
    char dir[4096];
    if ((size_t)snprintf(dir, sizeof dir, "%s/keys", data) >= sizeof dir)
        return ag_cli_usage_error("keys: the data directory's path is too long");
    int lk = getenv("AGORA_MASTER_KEY") ? hold_store(data) : -2;
    if (lk == -1) return 1;
    struct ag_err err;
    ag_err_clear(&err);
    size_t n = 0;
    int rc =
        ag_vault_rotate(dir, getenv("AGORA_MASTER_KEY"), getenv("AGORA_NEW_MASTER_KEY"), &n, &err);
    if (lk >= 0) close(lk);
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
