# The read-model port and its adapters. Only this module includes <sqlite3.h>
# (SQLite is linked to every module through AG_DEP_LIBS); a PostgreSQL adapter
# (src/readmodel/pg.c) will link PkgConfig::PQ here when it comes.
