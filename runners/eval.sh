#!/usr/bin/env bash
# Score the eval split with a checkpoint and write a score file.
# Usage: runners/eval.sh CHECKPOINT CONFIG OUT [extra cbl-search evaluate options]
#   CONFIG: a YAML of overrides applied on top of the checkpoint's own config
#   (e.g. data.root on another machine); pass - to use the checkpoint's config as is.
source "$(dirname "$0")/_common.sh"
if [ $# -lt 3 ]; then
  echo "usage: $0 CHECKPOINT CONFIG OUT [options]" >&2
  exit 2
fi
ckpt=$1 config=$2 out=$3
shift 3
sets=()
if [ "$config" != "-" ]; then
  sets+=(--overrides "$config")
fi
exec "$CBL" evaluate "$ckpt" ${sets[@]+"${sets[@]}"} --out "$out" "$@"
