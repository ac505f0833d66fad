/* agora run: start every context in one process (the services land in a later issue). */
#include <stdio.h>

#include "cli/cli.h"

static int run(int argc, char **argv)
{
    if (ag_cli_wants_help(argc, argv)) {
        puts("usage: agora run [--data DIR] [--listen ADDR]\n\n"
             "Start the commerce platform in one process. The services are not built yet;\n"
             "today 'agora store ...' works on a data directory.");
        return 0;
    }
    fputs("agora run: the commerce services are not part of this build yet.\n"
          "What works today: the event store — try 'agora store --help'.\n\n", stderr);
    return ag_cli_print_help();
}

const struct ag_cli_cmd ag_cli_cmd_run = {"run", "start the platform (every context in one process)", run};
