/*
 * agora mcp: the Model Context Protocol over stdio, for an agent or an IDE that
 * starts agora as its tool server (one JSON-RPC message per line on stdin, one
 * answer per line on stdout; logs go to stderr, never stdout).
 *
 * It opens the data directory itself (an in-process platform, like `agora run
 * --no-gateway`, so it cannot share DIR with a running `agora run`: point the
 * client at that one's POST /mcp instead) and serves the same tools as POST /mcp
 * through ag_platform_mcp. Who calls:
 *   --token T / AGORA_TOKEN   the token's principal, verified exactly as agora
 *                             run's gateway verifies it (the same secret,
 *                             issuer, audience, algorithm and times); a
 *                             customer's token sees only its own orders
 *   neither                   the local operator, an admin — whoever may read
 *                             DIR owns its data anyway (DIR is 0700)
 * The services' socket is DIR/mcp-<pid>.sock (0600): nothing listens on a
 * network address. End of input stops the platform cleanly.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agora/gateway.h"
#include "agora/platform.h"
#include "cli/cli.h"

static const char usage_text[] =
    "usage: agora mcp [--data DIR] [--token TOKEN]\n"
    "\n"
    "Serve agora's MCP tools (search_orders, get_order_status, list_products,\n"
    "get_inventory, place_order, cancel_order) over stdio: JSON-RPC 2.0, one\n"
    "message per line. The data directory must not be in use by `agora run`\n"
    "(use its POST /mcp then).\n"
    "\n"
    "  --data DIR     the data directory (default ./data, env AGORA_DATA)\n"
    "  --token TOKEN  act as this JWT's principal (env AGORA_TOKEN), verified like\n"
    "                 agora run's gateway does; without one, the local operator\n"
    "                 (an admin)\n";

/* The token's principal: sub, and whether its roles include admin. */
static int verify(const char *data, const char *token, char sub[128], bool *admin)
{
    char secret[65], roles[1100];
    struct ag_err err;
    ag_err_clear(&err);
    int rc = ag_cli_jwt_secret(data, false, secret, &err);
    char *yaml = rc ? NULL : ag_cli_run_gateway_yaml("127.0.0.1:0", secret, "127.0.0.1:1");
    if (!rc && !yaml) rc = ag_err_set(&err, AG_ENOMEM, "out of memory");
    struct ag_gateway_options o = {.config_yaml = yaml};
    if (!rc) rc = ag_gateway_verify_token(&o, token, sub, roles, &err);
    ag_free(yaml);
    if (rc) {
        fprintf(stderr, "agora mcp: %s\n", err.msg);
        return 1;
    }
    *admin = false;
    for (char *save = NULL, *r = strtok_r(roles, ", ", &save); r; r = strtok_r(NULL, ", ", &save))
        *admin = *admin || strcmp(r, "admin") == 0;
    return 0;
}

/* Read messages until end of input; answers go to `out`. */
static int serve(struct ag_platform *p, const char *sub, bool admin, FILE *out)
{
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    while ((n = getline(&line, &cap, stdin)) >= 0) {
        while (n && (line[n - 1] == '\n' || line[n - 1] == '\r')) line[--n] = '\0';
        if (!n) continue;
        char *reply = NULL;
        int rc = ag_platform_mcp(p, sub, admin, line, (size_t)n, &reply);
        if (rc) fprintf(stderr, "agora mcp: %s\n", ag_strerror(rc));
        if (reply && (fputs(reply, out) < 0 || fputc('\n', out) < 0 || fflush(out))) {
            ag_free(reply);
            break; /* the client went away */
        }
        ag_free(reply);
    }
    free(line);
    return 0;
}

static int run(int argc, char **argv)
{
    if (ag_cli_wants_help(argc, argv)) return fputs(usage_text, stdout), 0;
    const char *data = getenv("AGORA_DATA") ? getenv("AGORA_DATA") : "./data";
    const char *token = getenv("AGORA_TOKEN");
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--data") == 0 && i + 1 < argc)
            data = argv[++i];
        else if (strcmp(argv[i], "--token") == 0 && i + 1 < argc)
            token = argv[++i];
        else
            return ag_cli_usage_error(
                "mcp: unknown or incomplete option '%s' (see 'agora mcp --help')", argv[i]);
    }
    char sub[128] = "local";
    bool admin = true;
    if (token && *token && verify(data, token, sub, &admin)) return 1;
    /* stdout carries the protocol only: anything else printed goes to stderr */
    int proto = dup(STDOUT_FILENO);
    FILE *out = proto >= 0 ? fdopen(proto, "w") : NULL;
    if (!out || dup2(STDERR_FILENO, STDOUT_FILENO) < 0) {
        fprintf(stderr, "agora mcp: cannot set up stdout: %s\n", strerror(errno));
        return 1;
    }
    char sock[300];
    snprintf(sock, sizeof sock, "%s/mcp-%ld.sock", data, (long)getpid());
    char abs_sock[4500];
    if (sock[0] != '/') {
        char cwd[4096];
        snprintf(abs_sock, sizeof abs_sock, "%s/%s", getcwd(cwd, sizeof cwd) ? cwd : ".", sock);
    } else {
        snprintf(abs_sock, sizeof abs_sock, "%s", sock);
    }
    struct ag_platform_config cfg = {
        .data_dir = data, .seed = true, .workers = 1, .unix_path = abs_sock};
    struct ag_platform *p = NULL;
    struct ag_err err;
    ag_err_clear(&err);
    if (ag_platform_start(&cfg, &p, &err)) {
        fprintf(stderr, "agora mcp: %s\n", err.msg);
        fclose(out);
        return 1;
    }
    AG_INFO("mcp.ready", AG_LS("data", data), AG_LS("principal", sub));
    int rc = serve(p, sub, admin, out);
    ag_platform_stop(p);
    fclose(out);
    return rc;
}

const struct ag_cli_cmd ag_cli_cmd_mcp = {"mcp",
                                          "serve agora's tools to AI agents (MCP over stdio)", run};
