/* agora version */
#include <stdio.h>

#include "cli/cli.h"

static int run(int argc, char **argv)
{
    if (ag_cli_wants_help(argc, argv)) {
        puts("usage: agora version\n\nPrint agora's version.");
        return 0;
    }
    printf("agora %s\n", AG_VERSION);
    return 0;
}

const struct ag_cli_cmd ag_cli_cmd_version = {"version", "print the version", run};
