target_link_libraries(agora_http PUBLIC agora_obs ssl crypto)
