/*
 * agora certs: the cluster CA and its member certificates for mTLS between
 * `agora gateway` and the `agora serve` instances (include/agora/certs.h).
 * `init` makes the CA once (kept when there), `issue` a member certificate (run
 * it again to rotate: the processes using the files re-read them), `verify`
 * checks one against the CA. Exit 0 done, 1 refused (the reason on stderr), 2 a
 * usage error.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "agora/certs.h"
#include "cli/cli.h"

static const char usage_text[] =
    "usage: agora certs init --dir DIR\n"
    "       agora certs issue --dir DIR --name NAME [--ip IP]... [--dns NAME]...\n"
    "                         [--days N] [--not-before YYYY-MM-DD] [--out DIR]\n"
    "       agora certs verify --dir DIR --name NAME [--out DIR]\n"
    "\n"
    "The cluster's certificate authority and its members' certificates, for mTLS\n"
    "between agora gateway and the agora serve instances (README \"Certificates\n"
    "(mTLS)\"). Every key is EC P-256, written 0600.\n"
    "\n"
    "  init     create DIR (0700) with ca.pem (the CA certificate, given to every\n"
    "           member as --tls-ca / caCertificates) and ca.key (kept there, only\n"
    "           for issuing) unless they exist; an existing pair is checked\n"
    "  issue    a member certificate NAME.pem + NAME.key signed by the CA, usable to\n"
    "           serve and to call (serverAuth + clientAuth). Again for the same NAME =\n"
    "           a rotation: the files are replaced (renamed into place) and agora\n"
    "           serve / agora gateway pick them up within a second, or at SIGHUP\n"
    "  verify   check NAME.pem against ca.pem now (exit 1 with the reason if not)\n"
    "\n"
    "  --dir DIR          the CA's directory (env AGORA_CERTS)\n"
    "  --name NAME        the member: its CN and the files' name (A-Z a-z 0-9 . _ -)\n"
    "  --ip IP            a subjectAltName IP address the member is reached at\n"
    "                     (repeatable; the gateway checks it against the endpoint)\n"
    "  --dns NAME         a subjectAltName DNS name (repeatable); with neither --ip\n"
    "                     nor --dns the certificate names NAME\n"
    "  --days N           validity (default 30)\n"
    "  --not-before DATE  start of the validity, UTC (default now minus 5 minutes)\n"
    "  --out DIR          where NAME.pem / NAME.key go (default the CA's DIR)\n";

struct certs_opts {
    const char *dir, *name, *out, *not_before;
    const char *ips[AG_CERTS_MAX_SANS], *dns[AG_CERTS_MAX_SANS];
    size_t nips, ndns;
    long days;
};

static int list_add(const char **v, size_t *n, size_t other, const char *s)
{
    if (*n + other >= AG_CERTS_MAX_SANS)
        return ag_cli_usage_error("certs: at most %d --ip and --dns", AG_CERTS_MAX_SANS);
    v[(*n)++] = s;
    return 0;
}

static int parse(int argc, char **argv, struct certs_opts *o)
{
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int rc = 0;
        if (!v)
            return ag_cli_usage_error("certs: '%s' needs a value (see 'agora certs --help')", a);
        if (!strcmp(a, "--dir"))
            o->dir = v;
        else if (!strcmp(a, "--name"))
            o->name = v;
        else if (!strcmp(a, "--out"))
            o->out = v;
        else if (!strcmp(a, "--not-before"))
            o->not_before = v;
        else if (!strcmp(a, "--ip"))
            rc = list_add(o->ips, &o->nips, o->ndns, v);
        else if (!strcmp(a, "--dns"))
            rc = list_add(o->dns, &o->ndns, o->nips, v);
        else if (!strcmp(a, "--days"))
            o->days = strtol(v, NULL, 10) > 0 ? strtol(v, NULL, 10) : -1;
        else
            return ag_cli_usage_error("certs: unknown option '%s' (see 'agora certs --help')", a);
        if (rc) return rc;
        i++;
    }
    if (!o->dir) return ag_cli_usage_error("certs: --dir DIR (or env AGORA_CERTS) is needed");
    if (o->days < 0 || o->days > 36500) return ag_cli_usage_error("certs: --days takes 1..36500");
    return 0;
}

/* YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ, UTC, into Unix seconds; -1 when malformed. */
static int64_t parse_date(const char *s)
{
    struct tm tm = {0};
    const char *end = strptime(s, "%Y-%m-%dT%H:%M:%SZ", &tm);
    if (!end || *end) {
        memset(&tm, 0, sizeof tm);
        end = strptime(s, "%Y-%m-%d", &tm);
    }
    if (!end || *end) return -1;
    return (int64_t)timegm(&tm);
}

static int fail(const char *what, const struct ag_err *err, int rc)
{
    fprintf(stderr, "agora certs %s: %s\n", what, ag_err_msg(err, rc));
    return 1;
}

static int do_init(const struct certs_opts *o)
{
    struct ag_err err;
    bool created = false;
    int rc = ag_certs_init(o->dir, &created, &err);
    if (rc) return fail("init", &err, rc);
    printf("%s %s/ca.pem (and ca.key, 0600)\n",
           created ? "created the CA" : "the CA is there:", o->dir);
    return 0;
}

static int do_issue(const struct certs_opts *o)
{
    if (!o->name) return ag_cli_usage_error("certs issue: --name NAME is needed");
    struct ag_certs_member m = {.name = o->name,
                                .ips = o->ips,
                                .nips = o->nips,
                                .dns = o->dns,
                                .ndns = o->ndns,
                                .days = (uint32_t)o->days,
                                .out_dir = o->out};
    if (o->not_before && (m.not_before = parse_date(o->not_before)) <= 0)
        return ag_cli_usage_error("certs issue: --not-before takes YYYY-MM-DD or "
                                  "YYYY-MM-DDTHH:MM:SSZ (UTC), not '%s'",
                                  o->not_before);
    char cert[4096], key[4096];
    struct ag_err err;
    int rc = ag_certs_issue(o->dir, &m, cert, key, sizeof cert, &err);
    if (rc) {
        snprintf(key, sizeof key, "%s/ca.pem", o->dir);
        if (access(key, F_OK) != 0)
            fprintf(stderr, "agora certs issue: no CA in %s: run 'agora certs init --dir %s'\n",
                    o->dir, o->dir);
        return fail("issue", &err, rc);
    }
    unsigned days = m.days ? m.days : AG_CERTS_DAYS;
    printf("issued %s (key %s, 0600), valid for %u day%s\n", cert, key, days, days == 1 ? "" : "s");
    return 0;
}

static int do_verify(const struct certs_opts *o)
{
    if (!o->name) return ag_cli_usage_error("certs verify: --name NAME is needed");
    char ca[4200], cert[4200], subject[512];
    snprintf(ca, sizeof ca, "%s/ca.pem", o->dir);
    snprintf(cert, sizeof cert, "%s/%s.pem", o->out ? o->out : o->dir, o->name);
    struct ag_err err;
    int rc = ag_certs_verify(ca, cert, 0, subject, sizeof subject, &err);
    if (rc) return fail("verify", &err, rc);
    printf("%s: valid (%s)\n", cert, subject);
    return 0;
}

static int certs(int argc, char **argv)
{
    if (ag_cli_wants_help(argc, argv)) {
        fputs(usage_text, stdout);
        return 0;
    }
    if (argc < 2) {
        fputs(usage_text, stderr);
        return 2;
    }
    const char *env = getenv("AGORA_CERTS");
    struct certs_opts o = {.dir = env && *env ? env : NULL};
    int rc = parse(argc, argv, &o);
    if (rc) return rc;
    if (!strcmp(argv[1], "init")) return do_init(&o);
    if (!strcmp(argv[1], "issue")) return do_issue(&o);
    if (!strcmp(argv[1], "verify")) return do_verify(&o);
    return ag_cli_usage_error("certs: unknown subcommand '%s': init, issue or verify", argv[1]);
}

const struct ag_cli_cmd ag_cli_cmd_certs = {
    "certs", "the cluster CA and member certificates for mTLS (init, issue, verify)", certs};
