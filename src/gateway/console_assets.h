/* The operator console's files, built into the binary (cmake/embed_console.cmake
 * generates the table from the files under console/; src/gateway/console.c serves it). */
#ifndef AGORA_GATEWAY_CONSOLE_ASSETS_H
#define AGORA_GATEWAY_CONSOLE_ASSETS_H

#include <stddef.h>

struct ag_console_asset {
    const char *path;         /* file name under console/ ("app.js") */
    const char *content_type; /* by extension */
    const char *etag;         /* strong: "\"<16 hex of SHA-256>\"" */
    const unsigned char *data;
    size_t len;
};

/* Ends with an entry whose path is NULL. */
extern const struct ag_console_asset ag_console_assets[];

#endif
