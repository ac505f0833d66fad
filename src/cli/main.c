/* agora's entry point: dispatch to a subcommand. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agora/base.h"
#include "cli/cli.h"

static const struct ag_cli_cmd *const commands[] = {
    &ag_cli_cmd_run,         &ag_cli_cmd_projections, &ag_cli_cmd_store,   &ag_cli_cmd_version,
    &ag_cli_cmd_load,        &ag_cli_cmd_gateway,     &ag_cli_cmd_token,   &ag_cli_cmd_mcp,
    &ag_cli_cmd_backup,      &ag_cli_cmd_restore,     &ag_cli_cmd_keys,    &ag_cli_cmd_dlq,
    &ag_cli_cmd_console_url, &ag_cli_cmd_serve,       &ag_cli_cmd_cluster, &ag_cli_cmd_certs,
};

bool ag_cli_wants_help(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0) return false;
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) return true;
    }
    return false;
}

int ag_cli_usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("agora: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return 2;
}

static void usage(FILE *f)
{
    fputs("agora — an event-sourced commerce platform\n\n"
          "usage: agora <command> [options]\n\ncommands:\n",
          f);
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-12s %s\n", commands[i]->name, commands[i]->summary);
    fputs("\nRun 'agora <command> --help' for a command's options.\n", f);
}

int ag_cli_print_help(void)
{
    usage(stdout);
    return 0;
}

int main(int argc, char **argv)
{
    const char *lvl = getenv("AGORA_LOG_LEVEL");
    if (lvl && ag_log_level_parse(lvl) >= 0) ag_log_set_level(ag_log_level_parse(lvl));
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0 ||
        strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(argv[1], "--version") == 0) return ag_cli_cmd_version.run(1, argv + 1);
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(argv[1], commands[i]->name) == 0) return commands[i]->run(argc - 1, argv + 1);
    ag_cli_usage_error("unknown command '%s' (see 'agora --help')", argv[1]);
    return 2;
}
