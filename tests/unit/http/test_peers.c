/* The per-peer connection table (peers.c): the cap, release, IPv4 and
 * v4-mapped IPv6 counting as one address, and a randomized run against a plain
 * array that exercises growth and backward-shift deletion. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <string.h>

#include "http/internal.h"

static void key4(const char *ip, uint8_t k[16])
{
    struct sockaddr_in a = {.sin_family = AF_INET};
    inet_pton(AF_INET, ip, &a.sin_addr);
    cr_assert(ag__peer_key((struct sockaddr *)&a, k));
}

Test(peers, cap_and_release)
{
    struct ag__peers *p;
    cr_assert_eq(ag__peers_new(&p), 0);
    uint8_t a[16], b[16];
    key4("127.0.0.1", a);
    key4("127.0.0.2", b);
    for (int i = 0; i < 3; i++) cr_assert_eq(ag__peers_acquire(p, a, 3), 0);
    cr_assert_eq(ag__peers_acquire(p, a, 3), AG_EAGAIN, "over the cap");
    cr_assert_eq(ag__peers_acquire(p, b, 3), 0, "another address is not affected");
    ag__peers_release(p, a);
    cr_assert_eq(ag__peers_count(p, a), 2);
    cr_assert_eq(ag__peers_acquire(p, a, 3), 0, "room again after a close");
    ag__peers_free(p);
}

Test(peers, v4_mapped_v6_is_the_same_address)
{
    struct ag__peers *p;
    cr_assert_eq(ag__peers_new(&p), 0);
    uint8_t a[16], m[16];
    key4("10.1.2.3", a);
    struct sockaddr_in6 s6 = {.sin6_family = AF_INET6};
    inet_pton(AF_INET6, "::ffff:10.1.2.3", &s6.sin6_addr);
    cr_assert(ag__peer_key((struct sockaddr *)&s6, m));
    cr_assert_eq(ag__peers_acquire(p, a, 1), 0);
    cr_assert_eq(ag__peers_acquire(p, m, 1), AG_EAGAIN);
    ag__peers_free(p);
}

Test(peers, randomized_against_a_reference)
{
    enum { N = 3000 };
    static uint32_t ref[N];
    struct ag__peers *p;
    cr_assert_eq(ag__peers_new(&p), 0);
    uint64_t x = 88172645463325252ull;
    for (int step = 0; step < 200000; step++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        uint32_t i = (uint32_t)(x % N);
        uint8_t k[16] = {0};
        memcpy(k, &i, sizeof i);
        if ((x >> 32) % 3 != 0) {
            int rc = ag__peers_acquire(p, k, 4);
            cr_assert_eq(rc, ref[i] < 4 ? 0 : AG_EAGAIN);
            if (!rc) ref[i]++;
        } else if (ref[i]) {
            ag__peers_release(p, k);
            ref[i]--;
        }
        if (step % 20000 == 0)
            for (uint32_t j = 0; j < N; j++) {
                uint8_t kj[16] = {0};
                memcpy(kj, &j, sizeof j);
                cr_assert_eq(ag__peers_count(p, kj), ref[j], "address %u", j);
            }
    }
    ag__peers_free(p);
}
