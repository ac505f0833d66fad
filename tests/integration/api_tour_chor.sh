#!/usr/bin/env bash
# api_tour.sh with PlaceOrder choreographed over the local: bus (--saga-mode
# choreography): the same assertions as the orchestrated run.
export AGORA_SAGA_MODE=choreography
exec bash "$(dirname "$0")/api_tour.sh" "$@"
