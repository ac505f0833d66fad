target_link_libraries(agora_gateway PUBLIC agora_cache agora_mesh agora_discovery agora_http agora_resil agora_obs jwt cyaml yaml ssl crypto)
# The operator console (console/*): built into the binary as byte arrays
# (cmake/embed_console.cmake), served at /console by src/gateway/console.c.
file(GLOB AG_CONSOLE_FILES CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/console/*)
add_custom_command(
  OUTPUT ${PROJECT_BINARY_DIR}/generated/console_assets.c
  COMMAND ${CMAKE_COMMAND} -DSRC_DIR=${PROJECT_SOURCE_DIR}/console
          -DOUT=${PROJECT_BINARY_DIR}/generated/console_assets.c
          -P ${PROJECT_SOURCE_DIR}/cmake/embed_console.cmake
  DEPENDS ${AG_CONSOLE_FILES} ${PROJECT_SOURCE_DIR}/cmake/embed_console.cmake
  COMMENT "Embedding the console's files")
target_sources(agora_gateway PRIVATE ${PROJECT_BINARY_DIR}/generated/console_assets.c)
