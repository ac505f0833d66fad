/* The vault: seal/unseal, erasure, a wrong master key refused, rotation. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agora/vault.h"

static char dir[256];

static void setup(void)
{
    snprintf(dir, sizeof dir, "/tmp/ag_vault_%d_XXXXXX", (int)getpid());
    cr_assert(mkdtemp(dir));
}

static void teardown(void)
{
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    cr_assert_eq(system(cmd), 0);
}

static char *seal(struct ag_vault *v, const char *subject, const char *text)
{
    char *env = NULL;
    struct ag_err err;
    cr_assert_eq(ag_vault_seal(v, subject, text, strlen(text), &env, &err), 0, "%s", err.msg);
    return env;
}

static void expect_open(struct ag_vault *v, const char *env, const char *text)
{
    char *pt = NULL;
    size_t n = 0;
    struct ag_err err;
    cr_assert_eq(ag_vault_unseal(v, env, strlen(env), &pt, &n, &err), 0, "%s", err.msg);
    cr_assert_eq(n, strlen(text));
    cr_assert_str_eq(pt, text);
    ag_free(pt);
}

TestSuite(vault, .init = setup, .fini = teardown);

Test(vault, seal_open_and_no_plaintext)
{
    struct ag_vault *v;
    struct ag_err err;
    cr_assert_eq(ag_vault_open(dir, NULL, &v, &err), 0, "%s", err.msg);
    char *e = seal(v, "c1", "alice@example.com");
    cr_assert(ag_vault_is_envelope(e, strlen(e)));
    cr_assert_null(strstr(e, "alice"));
    expect_open(v, e, "alice@example.com");
    char *e2 = seal(v, "c1", "alice@example.com");
    cr_assert_str_neq(e, e2, "a fresh nonce each time");
    /* tampering is detected */
    e2[strlen(e2) - 6] ^= 1;
    char *pt;
    size_t n;
    cr_assert_neq(ag_vault_unseal(v, e2, strlen(e2), &pt, &n, &err), 0);
    ag_vault_close(v);
    /* reopened: same key from the file */
    cr_assert_eq(ag_vault_open(dir, NULL, &v, &err), 0, "%s", err.msg);
    expect_open(v, e, "alice@example.com");
    ag_vault_close(v);
    ag_free(e);
    ag_free(e2);
}

Test(vault, erase_makes_envelopes_noise)
{
    struct ag_vault *v;
    struct ag_err err;
    cr_assert_eq(ag_vault_open(dir, NULL, &v, &err), 0, "%s", err.msg);
    char *e = seal(v, "c2", "Bob");
    char *keep = seal(v, "c3", "Carol");
    cr_assert_eq(ag_vault_erase(v, "c2", &err), 0, "%s", err.msg);
    cr_assert_eq(ag_vault_erase(v, "c2", &err), 0, "idempotent");
    cr_assert(ag_vault_erased(v, "c2"));
    char *pt;
    size_t n;
    cr_assert_eq(ag_vault_unseal(v, e, strlen(e), &pt, &n, &err), AG_ENOTFOUND);
    cr_assert_eq(ag_vault_seal(v, "c2", "x", 1, &pt, &err), AG_EDOMAIN, "never a new key");
    expect_open(v, keep, "Carol");
    ag_vault_close(v);
    ag_free(e);
    ag_free(keep);
}

Test(vault, wrong_or_missing_master_key_is_refused)
{
    struct ag_vault *v;
    struct ag_err err;
    const char *k1 = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    const char *k2 = "ff0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    cr_assert_eq(ag_vault_open(dir, k1, &v, &err), 0, "%s", err.msg);
    char *e = seal(v, "c4", "Dora");
    ag_vault_close(v);
    cr_assert_eq(ag_vault_open(dir, k2, &v, &err), AG_ECONFIG);
    cr_assert(strstr(err.msg, "refusing"), "%s", err.msg);
    cr_assert_eq(ag_vault_open(dir, "nothex", &v, &err), AG_ECONFIG);
    cr_assert_eq(ag_vault_open(dir, NULL, &v, &err), AG_ECONFIG, "no new key file");
    cr_assert(strstr(err.msg, "missing"), "%s", err.msg);
    char p[300];
    snprintf(p, sizeof p, "%s/master.key", dir);
    cr_assert_eq(access(p, F_OK), -1, "no key file was made");
    cr_assert_eq(ag_vault_open(dir, k1, &v, &err), 0, "%s", err.msg);
    expect_open(v, e, "Dora");
    ag_vault_close(v);
    ag_free(e);
}

Test(vault, rotate_file_mode_while_open)
{
    struct ag_vault *v;
    struct ag_err err;
    cr_assert_eq(ag_vault_open(dir, NULL, &v, &err), 0, "%s", err.msg);
    char *e1 = seal(v, "c5", "Eve"), *e2 = seal(v, "c6", "Frank");
    char old[300];
    FILE *f = fopen((snprintf(old, sizeof old, "%s/master.key", dir), old), "r");
    char k1[80] = "";
    cr_assert(fgets(k1, sizeof k1, f));
    fclose(f);
    struct stat st;
    cr_assert_eq(stat(old, &st), 0);
    cr_assert_eq(st.st_mode & 0777, 0600);
    size_t n = 0;
    cr_assert_eq(ag_vault_rotate(dir, NULL, NULL, &n, &err), 0, "%s", err.msg);
    cr_assert_eq(n, 2);
    f = fopen(old, "r");
    char k2[80] = "";
    cr_assert(fgets(k2, sizeof k2, f));
    fclose(f);
    cr_assert_str_neq(k1, k2);
    /* the running vault has c5 cached; c6 it re-reads under the new key */
    expect_open(v, e1, "Eve");
    struct ag_vault *w;
    cr_assert_eq(ag_vault_open(dir, NULL, &w, &err), 0, "%s", err.msg);
    expect_open(w, e2, "Frank");
    char *e3 = seal(v, "c7", "Gus"); /* a key made by the old process after rotation */
    expect_open(w, e3, "Gus");
    ag_vault_close(w);
    ag_vault_close(v);
    /* the old key no longer opens the vault */
    k1[64] = '\0';
    cr_assert_eq(ag_vault_open(dir, k1, &v, &err), AG_ECONFIG);
    ag_free(e1);
    ag_free(e2);
    ag_free(e3);
}

Test(vault, rotate_with_the_callers_keys_and_no_vault)
{
    struct ag_vault *v;
    struct ag_err err;
    size_t n = 0;
    const char *k1 = "1111111111111111111111111111111111111111111111111111111111111111";
    const char *k2 = "2222222222222222222222222222222222222222222222222222222222222222";
    cr_assert_eq(ag_vault_rotate(dir, k1, k2, &n, &err), AG_ENOTFOUND, "no vault: nothing made");
    cr_assert_eq(ag_vault_open(dir, k1, &v, &err), 0, "%s", err.msg);
    char *e = seal(v, "c8", "Hal");
    ag_vault_close(v);
    cr_assert_eq(ag_vault_rotate(dir, k1, NULL, &n, &err), AG_ECONFIG, "both keys or neither");
    cr_assert_eq(ag_vault_rotate(dir, k1, k2, &n, &err), 0, "%s", err.msg);
    cr_assert_eq(n, 1);
    cr_assert_eq(ag_vault_rotate(dir, k2, k2, &n, &err), 0, "again: nothing to do");
    cr_assert_eq(n, 0);
    cr_assert_eq(ag_vault_open(dir, k1, &v, &err), AG_ECONFIG, "the old key is refused");
    cr_assert_eq(ag_vault_open(dir, k2, &v, &err), 0, "%s", err.msg);
    expect_open(v, e, "Hal");
    ag_vault_close(v);
    ag_free(e);
}

static void mac_of(struct ag_vault *v, const char *text, unsigned char out[AG_VAULT_MAC_LEN])
{
    struct ag_err err;
    cr_assert_eq(ag_vault_index_mac(v, text, strlen(text), out, &err), 0, "%s", err.msg);
}

static void index_kid(char out[17])
{
    char p[300];
    unsigned char f[128];
    snprintf(p, sizeof p, "%s/index.key", dir);
    FILE *fp = fopen(p, "rb");
    cr_assert(fp, "the index key is a file of the vault");
    cr_assert_eq(fread(f, 1, sizeof f, fp), 6 + 8 + 12 + 32 + 16, "wrapped like a data key");
    fclose(fp);
    for (int i = 0; i < 8; i++) snprintf(out + 2 * i, 3, "%02x", f[6 + i]);
}

/* The index key: made with the vault, the same after a reopen and a rotation
 * (only its wrapping changes), another vault's is another. */
Test(vault, index_key_is_stable_and_rotated)
{
    struct ag_vault *v, *w;
    struct ag_err err;
    unsigned char a[AG_VAULT_MAC_LEN], b[AG_VAULT_MAC_LEN], c[AG_VAULT_MAC_LEN];
    cr_assert_eq(ag_vault_open(dir, NULL, &v, &err), 0, "%s", err.msg);
    mac_of(v, "email:alice@example.com", a);
    mac_of(v, "email:bob@example.com", b);
    cr_assert(memcmp(a, b, sizeof a) != 0);
    char *e = seal(v, "c9", "Ivy");
    ag_vault_close(v);
    cr_assert_eq(ag_vault_open(dir, NULL, &v, &err), 0, "%s", err.msg);
    mac_of(v, "email:alice@example.com", b);
    cr_assert(memcmp(a, b, sizeof a) == 0, "the same key after a reopen");
    char kid1[17], kid2[17];
    index_kid(kid1);
    size_t n = 0;
    cr_assert_eq(ag_vault_rotate(dir, NULL, NULL, &n, &err), 0, "%s", err.msg);
    cr_assert_eq(n, 1, "data keys counted, the index key not");
    index_kid(kid2);
    cr_assert_str_neq(kid1, kid2, "re-wrapped under the new master key");
    mac_of(v, "email:alice@example.com", b); /* the running vault keeps its key */
    cr_assert(memcmp(a, b, sizeof a) == 0);
    cr_assert_eq(ag_vault_open(dir, NULL, &w, &err), 0, "%s", err.msg);
    mac_of(w, "email:alice@example.com", c);
    cr_assert(memcmp(a, c, sizeof a) == 0, "unwrapped with the new master key, unchanged");
    expect_open(w, e, "Ivy");
    ag_vault_close(w);
    ag_vault_close(v);
    /* the index key alone makes the vault a vault: no new master key over it */
    char p[300];
    snprintf(p, sizeof p, "%s/dk-c9", dir);
    cr_assert_eq(unlink(p), 0);
    snprintf(p, sizeof p, "%s/master.kid", dir);
    cr_assert_eq(unlink(p), 0);
    snprintf(p, sizeof p, "%s/master.key", dir);
    cr_assert_eq(unlink(p), 0);
    cr_assert_eq(ag_vault_open(dir, NULL, &v, &err), AG_ECONFIG);
    ag_free(e);
    /* another vault, another key */
    char other[300];
    snprintf(other, sizeof other, "%s/other", dir);
    cr_assert_eq(ag_vault_open(other, NULL, &w, &err), 0, "%s", err.msg);
    mac_of(w, "email:alice@example.com", c);
    cr_assert(memcmp(a, c, sizeof a) != 0);
    ag_vault_close(w);
}

/* With the caller's master keys too: rotation re-wraps the index key. */
Test(vault, index_key_with_the_callers_keys)
{
    const char *k1 = "3333333333333333333333333333333333333333333333333333333333333333";
    const char *k2 = "4444444444444444444444444444444444444444444444444444444444444444";
    struct ag_vault *v;
    struct ag_err err;
    unsigned char a[AG_VAULT_MAC_LEN], b[AG_VAULT_MAC_LEN];
    cr_assert_eq(ag_vault_open(dir, k1, &v, &err), 0, "%s", err.msg);
    mac_of(v, "x", a);
    ag_vault_close(v);
    size_t n = 0;
    cr_assert_eq(ag_vault_rotate(dir, k1, k2, &n, &err), 0, "%s", err.msg);
    cr_assert_eq(ag_vault_open(dir, k2, &v, &err), 0, "%s", err.msg);
    mac_of(v, "x", b);
    cr_assert(memcmp(a, b, sizeof a) == 0);
    ag_vault_close(v);
}
