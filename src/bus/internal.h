/* Private declarations of the bus port and its adapters (src/bus). */
#ifndef AGORA_BUS_INTERNAL_H
#define AGORA_BUS_INTERNAL_H

#include "agora/bus.h"

/* Adapters' open functions: `rest` is what follows "scheme:"; `opts` has its
 * defaults filled in by ag_bus_open. */
int ag__bus_local_open(const char *rest, const struct ag_bus_options *opts, struct ag_bus **out,
                       struct ag_err *err);
int ag__bus_nats_open(const char *rest, const struct ag_bus_options *opts, struct ag_bus **out,
                      struct ag_err *err);

#endif
