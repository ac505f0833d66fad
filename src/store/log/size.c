/* The public face of the record size formula (record.c owns the layout), for
 * tools that report what events cost on disk without reading segment bytes. */
#include "store/log/internal.h"

size_t ag_store_log_record_bytes(size_t stream_len, size_t type_len, size_t meta_len,
                                 size_t data_len)
{
    return ag__log_rec_size(stream_len, type_len, meta_len, data_len);
}
