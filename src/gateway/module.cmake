target_link_libraries(agora_gateway PUBLIC agora_mesh agora_http agora_resil agora_obs jwt cyaml yaml ssl crypto)
