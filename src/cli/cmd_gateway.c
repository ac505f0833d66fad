/* agora gateway: the API gateway standalone, from a YAML configuration. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agora/gateway.h"
#include "cli/cli.h"

static const char usage_text[] =
    "usage: agora gateway --config FILE [--listen HOST:PORT] [--workers N] [--check]\n"
    "                     [--tls-cert FILE --tls-key FILE]... [--http-redirect HOST:PORT]\n"
    "\n"
    "Run the API gateway: routes (VirtualService), upstream clusters (DestinationRule),\n"
    "JWT auth, rate limits, idempotency keys, BFF endpoints. SIGHUP reloads the\n"
    "configuration without dropping connections (a bad file is refused and the running\n"
    "one stays); SIGINT/SIGTERM drain and stop. See docs/gateway.md.\n"
    "\n"
    "  --config FILE       the YAML configuration (default config/gateway.yaml, env "
    "AGORA_GATEWAY_CONFIG)\n"
    "  --listen HOST:PORT  override gateway.listen (default 127.0.0.1:8080)\n"
    "  --workers N         worker loops (default gateway.workers, else the number of cores)\n"
    "  --check             compile the configuration, report errors and exit\n"
    "  --tls-cert FILE     serve HTTPS with this PEM certificate chain (with --tls-key;\n"
    "                      repeat the pair for more names: SNI picks, the first is the\n"
    "                      default; overrides gateway.tls.certificates). SIGHUP re-reads\n"
    "                      the files. Answers carry Strict-Transport-Security\n"
    "  --tls-key FILE      the certificate's PEM private key\n"
    "  --http-redirect HOST:PORT  also listen for plain HTTP there and answer 308 to https\n"
    "  --cluster-status FILE  serve GET /admin/cluster (admin) from this `agora cluster`\n"
    "                      status file (agora cluster up passes DIR/status.json)\n"
    "\n"
    "env AGORA_MESH_KEY (32+ characters): sign the identity headers passed upstream\n"
    "(x-user-sig); `agora serve` instances require it, with the same key.\n";

static int run(int argc, char **argv)
{
    if (ag_cli_wants_help(argc, argv)) {
        fputs(usage_text, stdout);
        return 0;
    }
    const char *cfg =
        getenv("AGORA_GATEWAY_CONFIG") ? getenv("AGORA_GATEWAY_CONFIG") : "config/gateway.yaml";
    const char *listen = NULL, *cluster_status = NULL;
    int workers = 0;
    bool check = false;
    struct ag_cli_tls tls = {0};
    for (int i = 1; i < argc; i++) {
        int t = ag_cli_tls_arg(argc, argv, &i, &tls, "gateway");
        if (t < 0) return 2;
        if (t > 0) continue;
        if (strcmp(argv[i], "--config") == 0 && i + 1 < argc)
            cfg = argv[++i];
        else if (strcmp(argv[i], "--listen") == 0 && i + 1 < argc)
            listen = argv[++i];
        else if (strcmp(argv[i], "--workers") == 0 && i + 1 < argc)
            workers = atoi(argv[++i]);
        else if (strcmp(argv[i], "--cluster-status") == 0 && i + 1 < argc)
            cluster_status = argv[++i];
        else if (strcmp(argv[i], "--check") == 0)
            check = true;
        else
            return ag_cli_usage_error(
                "gateway: unknown or incomplete option '%s' (see 'agora gateway --help')", argv[i]);
    }
    char host[64];
    uint16_t port = 0;
    struct ag_err perr;
    if (listen && ag_hostport_parse(listen, AG_HOSTPORT_PORT0, host, sizeof host, &port, &perr))
        return ag_cli_usage_error("gateway: --listen takes HOST:PORT: %s", perr.msg);
    if (workers < 0 || workers > 256) return ag_cli_usage_error("gateway: --workers takes 1..256");
    if (ag_cli_tls_check(&tls, "gateway")) return 2;
    struct ag_gateway_options o = {.config_path = cfg,
                                   .listen = listen,
                                   .workers = workers,
                                   .tls_certs = tls.ncert ? tls.certs : NULL,
                                   .ntls_certs = tls.ncert,
                                   .http_redirect = tls.redirect,
                                   .mesh_key = ag_cli_mesh_key(),
                                   .cluster_status = cluster_status};
    struct ag_err err;
    ag_err_clear(&err);
    if (check) {
        int rc = ag_gateway_config_check(&o, &err);
        if (rc)
            fprintf(stderr, "agora gateway: %s\n", ag_err_msg(&err, rc));
        else
            fprintf(stderr, "agora gateway: %s is valid\n", cfg);
        return rc ? 1 : 0;
    }
    struct ag_gateway *gw;
    int rc = ag_gateway_start(&o, &gw, &err);
    if (rc) {
        fprintf(stderr, "agora gateway: %s\n", ag_err_msg(&err, rc));
        return 1;
    }
    fprintf(stderr,
            "agora gateway: serving %s on port %u (config %s); SIGHUP reloads, Ctrl-C stops\n",
            ag_gateway_https(gw) ? "https" : "http", ag_gateway_port(gw), cfg);
    if (ag_gateway_redirect_port(gw))
        fprintf(stderr, "agora gateway: plain http on port %u redirects to https\n",
                ag_gateway_redirect_port(gw));
    printf("PORT %u\n", ag_gateway_port(gw));
    fflush(stdout);
    ag_gateway_run_until_signal(gw);
    ag_gateway_stop(gw, 5000);
    fprintf(stderr, "agora gateway: stopped\n");
    return 0;
}

const struct ag_cli_cmd ag_cli_cmd_gateway = {"gateway",
                                              "run the API gateway from a YAML configuration", run};
