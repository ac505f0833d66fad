/*
 * agora console-url: print a one-time link that signs an operator into the
 * console of a running `agora run` (src/gateway/console.c). The code sits in the
 * link's fragment (#code=...), which a browser never sends to a server, so it is
 * in no access log; only its SHA-256 is written, under DIR/console-codes. It works
 * once and for --ttl seconds (default 5 minutes); the page trades it for a
 * 15-minute admin token kept in the tab's sessionStorage.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agora/gateway.h"
#include "cli/cli.h"

static const char usage_text[] =
    "usage: agora console-url [--data DIR] [--listen HOST:PORT] [--https] [--ttl SECONDS]\n"
    "\n"
    "Print a one-time link to the operator console of the agora running on DIR:\n"
    "  http://HOST:PORT/console#code=<64 hex digits>\n"
    "Opening it signs the browser in as an admin (sub \"console\") for 15 minutes.\n"
    "The code works once and expires after --ttl seconds (default 300).\n"
    "\n"
    "  --data DIR          agora run's data directory (default ./data, env AGORA_DATA)\n"
    "  --listen HOST:PORT  where agora run serves (default 127.0.0.1:8080, env AGORA_LISTEN)\n"
    "  --https             the link starts with https:// (agora run --tls-cert ...)\n"
    "  --ttl SECONDS       how long the code may wait to be used, 1..3600 (default 300)\n";

static int run(int argc, char **argv)
{
    if (ag_cli_wants_help(argc, argv)) {
        fputs(usage_text, stdout);
        return 0;
    }
    const char *data = getenv("AGORA_DATA") ? getenv("AGORA_DATA") : "./data";
    const char *listen = getenv("AGORA_LISTEN") ? getenv("AGORA_LISTEN") : "127.0.0.1:8080";
    bool https = false;
    uint64_t ttl = AG_CONSOLE_CODE_TTL_S;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--data") == 0 && i + 1 < argc)
            data = argv[++i];
        else if (strcmp(argv[i], "--listen") == 0 && i + 1 < argc)
            listen = argv[++i];
        else if (strcmp(argv[i], "--https") == 0)
            https = true;
        else if (strcmp(argv[i], "--ttl") == 0 && i + 1 < argc) {
            if (ag_parse_u64(argv[++i], &ttl) || ttl < 1 || ttl > 3600)
                return ag_cli_usage_error("console-url: --ttl wants 1..3600 seconds, not '%s'",
                                          argv[i]);
        } else
            return ag_cli_usage_error(
                "console-url: unknown or incomplete option '%s' (see 'agora console-url --help')",
                argv[i]);
    }
    char host[64];
    uint16_t port = 0;
    struct ag_err err;
    ag_err_clear(&err);
    if (ag_hostport_parse(listen, 0, host, sizeof host, &port, &err))
        return ag_cli_usage_error("console-url: bad --listen '%s': %s", listen, err.msg);
    if (strcmp(host, "0.0.0.0") == 0) snprintf(host, sizeof host, "127.0.0.1");
    char code[65];
    if (ag_gateway_console_code(data, ttl, NULL, code, &err)) {
        fprintf(stderr, "agora console-url: %s\n", err.msg);
        return 1;
    }
    bool v6 = strchr(host, ':') != NULL;
    printf("%s://%s%s%s:%u/console#code=%s\n", https ? "https" : "http", v6 ? "[" : "", host,
           v6 ? "]" : "", port, code);
    return 0;
}

const struct ag_cli_cmd ag_cli_cmd_console_url = {
    "console-url", "print a one-time sign-in link to the operator console", run};
