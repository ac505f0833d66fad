/* ag_parse_size: the byte sizes of --index-memory and --cache-memory. */
#include <criterion/criterion.h>

#include "agora/base.h"

Test(size, suffixes_and_refusals)
{
    uint64_t v = 0;
    cr_assert_eq(ag_parse_size("65536", &v), 0);
    cr_assert_eq(v, 65536);
    cr_assert_eq(ag_parse_size("64M", &v), 0);
    cr_assert_eq(v, 64ull << 20);
    cr_assert_eq(ag_parse_size("64m", &v), 0);
    cr_assert_eq(v, 64ull << 20);
    cr_assert_eq(ag_parse_size("1GiB", &v), 0);
    cr_assert_eq(v, 1ull << 30);
    cr_assert_eq(ag_parse_size("512KB", &v), 0);
    cr_assert_eq(v, 512ull << 10);
    cr_assert_eq(ag_parse_size("2T", &v), 0);
    cr_assert_eq(v, 2ull << 40);
    const char *bad[] = {"", "M", "-1M", "+5", "12Q", "64 M", "64MBx", "1.5G", "99999999999999T"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        cr_assert_eq(ag_parse_size(bad[i], &v), AG_EINVAL, "'%s' accepted", bad[i]);
    cr_assert_eq(ag_parse_size(NULL, &v), AG_EINVAL);
}
