/*
 * The operator console at /console: its files, and the one-time sign-in.
 *
 * Files. The files under console/ are built into the binary (cmake/embed_console.cmake →
 * ag_console_assets); GET /console answers index.html, /console/{file} the
 * file (GET only). Each answer carries its strong ETag (If-None-Match → 304), Cache-Control:
 * no-cache (revalidate: the names carry no version), nosniff, no referrer, and a
 * strict Content-Security-Policy: scripts, styles and fetches from this origin
 * only, no inline script, no framing. The files hold no data, so they are
 * public; every data call the page makes carries an admin bearer token.
 *
 * One-time sign-in. `agora console-url --data DIR` makes a code: 32 random bytes
 * as 64 hex digits, printed in the link's fragment (#code=…, never sent to a
 * server, so never in an access log). What is kept is only a file named by the
 * code's SHA-256 under DIR/console-codes/ (0700, files 0600) holding its expiry
 * (Unix seconds, AG_CONSOLE_CODE_TTL_S by default; making a code sweeps the
 * expired ones). POST /admin/console/session
 * {"code"} redeems it: the file is read and unlinked, and only the caller whose
 * unlink succeeded gets a token, so a code works once even when two requests race;
 * an expired one is removed and refused. The token is an ordinary admin JWT
 * (sub "console", role admin) signed with the gateway's first issuer's key, for
 * AG_CONSOLE_TOKEN_TTL_S. Refusals are one 401 whatever the reason (unknown,
 * used, expired), logged and counted as agora_authz_denied_total{reason=
 * "console_code"}. A gateway started without a console directory (agora gateway)
 * has no codes: 401 too.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gateway/console_assets.h"
#include "gateway/internal.h"

#define CODE_HEX 64

static const char csp[] = "default-src 'none'; script-src 'self'; style-src 'self'; "
                          "img-src 'self' data:; connect-src 'self'; base-uri 'none'; "
                          "form-action 'none'; frame-ancestors 'none'";

/* ---- files ---- */

static const struct ag_console_asset *asset(const char *name)
{
    for (const struct ag_console_asset *a = ag_console_assets; a->path; a++)
        if (strcmp(a->path, name) == 0) return a;
    return NULL;
}

static void security_headers(struct ag_http_req *req)
{
    ag_http_resp_header(req, "Content-Security-Policy", csp);
    ag_http_resp_header(req, "X-Content-Type-Options", "nosniff");
    ag_http_resp_header(req, "Referrer-Policy", "no-referrer");
    ag_http_resp_header(req, "X-Frame-Options", "DENY");
}

static int serve(struct ag_http_req *req, const char *name)
{
    const struct ag_console_asset *a = asset(name);
    security_headers(req);
    if (!a) return ag__gw_problem(req, 404, "no such console file");
    ag_http_resp_header(req, "ETag", a->etag);
    ag_http_resp_header(req, "Cache-Control", "no-cache");
    const char *inm = ag_http_req_header(req, "if-none-match");
    if (inm && strstr(inm, a->etag)) return ag_http_respond(req, 304, NULL, NULL, 0);
    return ag_http_respond(req, 200, a->content_type, a->data, a->len);
}

int ag__gw_console_index(struct ag_http_req *req, void *ud)
{
    AG_UNUSED(ud);
    return serve(req, "index.html");
}

int ag__gw_console_file(struct ag_http_req *req, void *ud)
{
    AG_UNUSED(ud);
    const char *f = ag_http_req_param(req, "file");
    return serve(req, f && *f ? f : "index.html");
}

/* ---- one-time codes ---- */

static int sha256_hex(const char *s, size_t n, char out[65])
{
    unsigned char md[32];
    unsigned int mdlen = 0;
    if (!EVP_Digest(s, n, md, &mdlen, EVP_sha256(), NULL) || mdlen != 32) return AG_EIO;
    for (size_t i = 0; i < 32; i++) snprintf(out + 2 * i, 3, "%02x", md[i]);
    return 0;
}

static bool code_ok(const char *code)
{
    if (!code || strlen(code) != CODE_HEX) return false;
    return strspn(code, "0123456789abcdef") == CODE_HEX;
}

static int code_path(const char *dir, const char *code, char *path, size_t n)
{
    char h[65];
    if (sha256_hex(code, strlen(code), h)) return AG_EIO;
    if ((size_t)snprintf(path, n, "%s/console-codes/%s", dir, h) >= n) return AG_EINVAL;
    return 0;
}

/* The expiry written in a code's file; 0 when unreadable. */
static uint64_t read_expiry(const char *path)
{
    char buf[32] = {0};
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return 0;
    buf[n] = 0;
    return strtoull(buf, NULL, 10);
}

/* Remove the codes of `sub` that expired unused (each link that was never opened
 * leaves one small file); best effort. */
static void sweep_expired(const char *sub, uint64_t now)
{
    DIR *d = opendir(sub);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strlen(e->d_name) != CODE_HEX) continue;
        char path[1200];
        if ((size_t)snprintf(path, sizeof path, "%s/%s", sub, e->d_name) >= sizeof path) continue;
        uint64_t expires = read_expiry(path);
        if (expires && expires <= now) unlink(path);
    }
    closedir(d);
}

int ag_gateway_console_code(const char *dir, uint64_t ttl_s, const struct ag_clock *clock,
                            char code[65], struct ag_err *err)
{
    const struct ag_clock *clk = clock ? clock : ag_clock_system();
    uint64_t now = ag_clock_now(clk) / 1000000000ull;
    char sub[1100];
    if ((size_t)snprintf(sub, sizeof sub, "%s/console-codes", dir) >= sizeof sub)
        return ag_err_set(err, AG_EINVAL, "the data directory's path is too long");
    if (mkdir(sub, 0700) && errno != EEXIST)
        return ag_err_set(err, AG_EIO, "cannot create %s: %s", sub, strerror(errno));
    sweep_expired(sub, now);
    unsigned char raw[32];
    if (getrandom(raw, sizeof raw, 0) != (ssize_t)sizeof raw)
        return ag_err_set(err, AG_EIO, "no randomness for a console code");
    for (size_t i = 0; i < 32; i++) snprintf(code + 2 * i, 3, "%02x", raw[i]);
    char path[1200];
    if (code_path(dir, code, path, sizeof path))
        return ag_err_set(err, AG_EIO, "cannot hash the console code");
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) return ag_err_set(err, AG_EIO, "cannot create %s: %s", path, strerror(errno));
    char line[32];
    int len = snprintf(line, sizeof line, "%llu\n", (unsigned long long)now + ttl_s);
    bool ok = write(fd, line, (size_t)len) == len;
    close(fd);
    if (!ok) {
        unlink(path);
        return ag_err_set(err, AG_EIO, "cannot write %s", path);
    }
    return 0;
}

int ag_gateway_console_redeem(const char *dir, const char *code, const struct ag_clock *clock,
                              struct ag_err *err)
{
    char path[1200];
    if (!dir || !code_ok(code) || code_path(dir, code, path, sizeof path))
        return ag_err_set(err, AG_ENOTFOUND, "no such console code");
    uint64_t expires = read_expiry(path);
    /* whoever unlinks it owns it: a code works once, also under a race */
    if (!expires || unlink(path) != 0)
        return ag_err_set(err, AG_ENOTFOUND, "no such console code (or used already)");
    const struct ag_clock *clk = clock ? clock : ag_clock_system();
    if (ag_clock_now(clk) / 1000000000ull >= expires)
        return ag_err_set(err, AG_ETIMEDOUT, "the console code has expired");
    return 0;
}

/* ---- POST /admin/console/session ---- */

static int refuse_code(struct ag_gateway *gw, struct ag_http_req *req, const char *why)
{
    ag__gw_count_denied(gw, "console_code");
    AG_WARN("authz.denied", AG_LS("path", ag_http_req_path(req)), AG_LS("reason", "console_code"),
            AG_LS("detail", why));
    ag_http_resp_header(req, "Cache-Control", "no-store");
    ag_http_resp_header(req, "WWW-Authenticate", "Bearer");
    return ag__gw_problem(req, 401, "the console code is unknown, used or expired");
}

static int mint(struct ag_gateway *gw, char **tok, uint64_t *exp, struct ag_err *err)
{
    static const char *const roles[] = {"admin"};
    struct ag_gateway_token_request t = {
        .sub = "console", .roles = roles, .nroles = 1, .ttl_s = AG_CONSOLE_TOKEN_TTL_S};
    pthread_mutex_lock(&gw->conf_lock);
    struct gw_conf *c = gw->conf;
    ag__gw_conf_ref(c);
    pthread_mutex_unlock(&gw->conf_lock);
    uint64_t now = ag_clock_now(gw->clock) / 1000000000ull;
    if (c->jwt.max_lifetime_s && t.ttl_s > c->jwt.max_lifetime_s) t.ttl_s = c->jwt.max_lifetime_s;
    *exp = now + t.ttl_s;
    int rc = ag__gw_jwt_mint(&c->jwt, &t, now, tok, err);
    ag__gw_conf_unref(c);
    return rc;
}

int ag__gw_console_session(struct ag_http_req *req, void *ud)
{
    struct ag_gateway *gw = ud;
    size_t n = 0;
    const char *body = ag_http_req_body(req, &n);
    json_t *j = body && n ? json_loadb(body, n, 0, NULL) : NULL;
    const char *code = json_string_value(json_object_get(j, "code"));
    struct ag_err err;
    ag_err_clear(&err);
    int rc = code ? ag_gateway_console_redeem(gw->opts.console_dir, code, gw->clock, &err)
                  : ag_err_set(&err, AG_EINVAL, "no code in the body");
    json_decref(j);
    if (rc) return refuse_code(gw, req, err.msg);
    char *tok = NULL;
    uint64_t exp = 0;
    if (mint(gw, &tok, &exp, &err)) {
        AG_WARN("console.session_failed", AG_LS("error", err.msg));
        return ag__gw_problem(req, 503, "this gateway cannot sign tokens");
    }
    char when[40];
    ag_time_rfc3339(exp * 1000000000ull, when);
    AG_INFO("console.session", AG_LS("sub", "console"), AG_LS("expiresAt", when));
    ag_http_resp_header(req, "Cache-Control", "no-store");
    json_t *out = json_pack("{s:s, s:s, s:[s], s:s}", "token", tok, "sub", "console", "roles",
                            "admin", "expiresAt", when);
    ag_free(tok);
    return ag_http_respond_json(req, 200, out);
}
