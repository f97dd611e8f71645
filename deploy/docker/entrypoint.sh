#!/bin/sh
# Entry point of the dclust images.
#
#   <image> scheduler [ARGS]   runs `dask scheduler ARGS`
#   <image> worker ADDR [ARGS] runs `dask worker ADDR ARGS`
#   <image> COMMAND [ARGS]     runs COMMAND as given (dask ..., dclust ..., python ...)
#
# The bare sub-command form exists for launchers that pass the command as one argument
# (the dask/dask Helm chart's `worker.image.dask_worker` value, for example). Launchers
# still written for the old one-word dask commands ("dask-" followed by the sub-command)
# get the same treatment: the prefix is dropped and the current `dask SUB` command runs.
set -e
case "$1" in
  scheduler|worker)
    exec dask "$@" ;;
  dask-*)
    sub="${1#dask-}"
    shift
    exec dask "$sub" "$@" ;;
  *)
    exec "$@" ;;
esac
