# The read-model port and its adapters. Only this module includes <sqlite3.h>
# (SQLite is linked to every module through AG_DEP_LIBS); its PostgreSQL adapter
# (src/readmodel/pg.c) is compiled when libpq is found.
if(PQ_FOUND)
  target_link_libraries(agora_readmodel PUBLIC PkgConfig::PQ)
  target_compile_definitions(agora_readmodel PUBLIC AG_HAVE_PQ=1)
endif()
