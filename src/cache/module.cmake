# The caches: the in-process LRU and the Redis client (hiredis, Debian libhiredis-dev).
pkg_check_modules(HIREDIS REQUIRED IMPORTED_TARGET hiredis)
target_link_libraries(agora_cache PUBLIC agora_obs agora_resil PkgConfig::HIREDIS)
