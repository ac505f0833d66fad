/* agora projections: list read models, rebuild one from the event log. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agora/platform.h"
#include "cli/cli.h"

static const char usage_text[] =
    "usage: agora projections list\n"
    "       agora projections rebuild NAME [--data DIR] [--readmodels URI]\n"
    "\n"
    "Rebuild a read model from position 0 of the event log (agora run must be stopped).\n"
    "--readmodels (env AGORA_READMODELS) names where the read models live, as for\n"
    "agora run: SQLite files under DIR/readmodels by default, or postgresql://...\n"
    "(the read model's schema is dropped and made again).\n";

static void progress(void *ud, uint64_t done, uint64_t total)
{
    const char *name = ud;
    int pct = total ? (int)(done * 100 / total) : 100;
    int bar = pct / 4;
    fprintf(stderr, "\r%-12s [%.*s%*s] %3d%% %llu/%llu events", name, bar,
            "#########################", 25 - bar, "", pct, (unsigned long long)done,
            (unsigned long long)total);
}

static int run(int argc, char **argv)
{
    if (ag_cli_wants_help(argc, argv) || argc < 2) {
        fputs(usage_text, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *data = getenv("AGORA_DATA") ? getenv("AGORA_DATA") : "./data";
    const char *name = NULL;
    const char *readmodels = getenv("AGORA_READMODELS");
    if (readmodels && !*readmodels) readmodels = NULL;
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--data") == 0 && i + 1 < argc)
            data = argv[++i];
        else if (strcmp(argv[i], "--readmodels") == 0 && i + 1 < argc)
            readmodels = argv[++i];
        else if (!name && argv[i][0] != '-')
            name = argv[i];
        else
            return ag_cli_usage_error("projections: unexpected '%s'", argv[i]);
    }
    if (strcmp(argv[1], "list") == 0) {
        for (const char *const *n = ag_platform_projection_names(); *n; n++) puts(*n);
        return 0;
    }
    if (strcmp(argv[1], "rebuild") != 0)
        return ag_cli_usage_error("projections: unknown command '%s'", argv[1]);
    if (!name)
        return ag_cli_usage_error(
            "projections rebuild: which NAME? (see 'agora projections list')");
    struct ag_err err;
    ag_err_clear(&err);
    bool tty = isatty(2);
    int rc = ag_platform_rebuild_projection_at(data, readmodels, name, tty ? progress : NULL,
                                               (void *)name, &err);
    if (tty) fputc('\n', stderr);
    if (rc) {
        fprintf(stderr, "agora projections rebuild: %s\n", ag_err_msg(&err, rc));
        return 1;
    }
    fprintf(stderr, "rebuilt %s\n", name);
    return 0;
}

const struct ag_cli_cmd ag_cli_cmd_projections = {"projections", "list or rebuild read models",
                                                  run};
