/* Differential fuzzing of ag_json_check against jansson: any input they judge
 * differently is a bug in one of them (and would let the store accept a payload
 * the services cannot read). */
#include <jansson.h>
#include <stdint.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "agora/base.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char msg[160];
    int mine = ag_json_check((const char *)data, size, false, msg, sizeof msg);
    json_t *j =
        json_loadb((const char *)data, size, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, NULL);
    /* jansson stops at a NUL byte and accepts what came before; agora refuses it */
    bool has_nul = memchr(data, 0, size) != NULL;
    if (mine == 0 && !j) abort();
    if (mine != 0 && j && !has_nul) abort();
    json_decref(j);
    return 0;
}
