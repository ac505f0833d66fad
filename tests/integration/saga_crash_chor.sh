#!/usr/bin/env bash
# saga_crash.sh with PlaceOrder choreographed over the local: bus (--saga-mode
# choreography): the same assertions as the orchestrated run.
export AGORA_SAGA_MODE=choreography
# fewer kill rounds than the orchestrated run's 24: this entry stays under a minute
export ROUNDS=${ROUNDS:-10}
exec bash "$(dirname "$0")/saga_crash.sh" "$@"
