/* The store conformance suite (tests/unit/store/test_store.c) on PostgreSQL. */
#define AG_TEST_STORE_PG 1
#include "unit/store/test_store.c"
