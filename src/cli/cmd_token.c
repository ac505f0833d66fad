/* agora token: mint a development JWT with the gateway configuration's key. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agora/gateway.h"
#include "cli/cli.h"

static const char usage_text[] =
    "usage: agora token --sub ID [--role ROLE]... [--scope S] [--ttl SECONDS] [--data DIR]\n"
    "       agora token --sub ID ... --config FILE [--issuer ISS]\n"
    "\n"
    "Print a JWT for development and tests. Without --config it is signed with the\n"
    "secret `agora run --data DIR` uses (AGORA_JWT_SECRET, else DIR/jwt-secret):\n"
    "  curl -H \"Authorization: Bearer $(agora token --sub u1 --role customer)\" ...\n"
    "With --config FILE it is signed with the first signing key of the configured\n"
    "issuer of that gateway configuration (an HS secret, or privateKeyFile for RS/ES).\n"
    "\n"
    "  --sub ID         subject (the user id forwarded as x-user-id)\n"
    "  --role ROLE      a role (repeatable), forwarded as x-user-roles\n"
    "  --scope S        scope claim (space-separated scopes)\n"
    "  --ttl SECONDS    lifetime, 1 to the gateway's jwt.maxTokenLifetime (default\n"
    "                   24h = 86400); default 3600\n"
    "  --issuer ISS     which configured issuer (default the first)\n"
    "  --data DIR       agora run's data directory (default ./data, env AGORA_DATA)\n"
    "  --config FILE    a gateway configuration instead (env AGORA_GATEWAY_CONFIG)\n";

static int run(int argc, char **argv)
{
    if (ag_cli_wants_help(argc, argv)) {
        fputs(usage_text, stdout);
        return 0;
    }
    const char *cfg = getenv("AGORA_GATEWAY_CONFIG");
    const char *data = getenv("AGORA_DATA") ? getenv("AGORA_DATA") : "./data";
    const char *roles[16];
    struct ag_gateway_token_request t = {.roles = roles};
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--sub") == 0 && i + 1 < argc)
            t.sub = argv[++i];
        else if (strcmp(argv[i], "--role") == 0 && i + 1 < argc && t.nroles < 16)
            roles[t.nroles++] = argv[++i];
        else if (strcmp(argv[i], "--scope") == 0 && i + 1 < argc)
            t.scope = argv[++i];
        else if (strcmp(argv[i], "--ttl") == 0 && i + 1 < argc) {
            char *end;
            const char *v = argv[++i];
            t.ttl_s = strtoull(v, &end, 10);
            if (*v < '0' || *v > '9' || *end || t.ttl_s == 0)
                return ag_cli_usage_error(
                    "token: --ttl wants a positive number of seconds, not '%s'", v);
        } else if (strcmp(argv[i], "--issuer") == 0 && i + 1 < argc)
            t.issuer = argv[++i];
        else if (strcmp(argv[i], "--config") == 0 && i + 1 < argc)
            cfg = argv[++i];
        else if (strcmp(argv[i], "--data") == 0 && i + 1 < argc)
            data = argv[++i];
        else
            return ag_cli_usage_error(
                "token: unknown or incomplete option '%s' (see 'agora token --help')", argv[i]);
    }
    if (!t.sub) return ag_cli_usage_error("token: --sub is required");
    struct ag_gateway_options o = {.config_path = cfg};
    struct ag_err err;
    ag_err_clear(&err);
    char *tok = NULL, *yaml = NULL, secret[65];
    int rc = 0;
    if (!cfg) { /* the configuration agora run uses for DATA */
        rc = ag_cli_jwt_secret(data, false, secret, &err);
        if (!rc && !(yaml = ag_cli_run_gateway_yaml("127.0.0.1:0", secret, "127.0.0.1:1")))
            rc = ag_err_set(&err, AG_ENOMEM, "out of memory");
        o.config_yaml = yaml;
    }
    if (!rc) rc = ag_gateway_token(&o, &t, &tok, &err);
    ag_free(yaml);
    if (rc) {
        fprintf(stderr, "agora token: %s\n", ag_err_msg(&err, rc));
        return 1;
    }
    puts(tok);
    ag_free(tok);
    return 0;
}

const struct ag_cli_cmd ag_cli_cmd_token = {"token",
                                            "mint a development JWT from the gateway's key", run};
