# the bus port links the store (the local adapter keeps its messages there) and
# libnats (the JetStream adapter; Debian's libnats-dev)
pkg_check_modules(NATS REQUIRED IMPORTED_TARGET libnats)
target_link_libraries(agora_bus PUBLIC agora_store PkgConfig::NATS)
