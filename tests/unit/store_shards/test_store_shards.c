/* The store conformance suite (tests/unit/store/test_store.c) on a 2-shard store. */
#define AG_TEST_STORE_SHARDS 1
#include "unit/store/test_store.c"
