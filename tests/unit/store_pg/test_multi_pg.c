/* The multi-stream append conformance suite (tests/unit/store/test_multi.c) on
 * PostgreSQL. */
#define AG_TEST_STORE_PG 1
#include "unit/store/test_multi.c"
