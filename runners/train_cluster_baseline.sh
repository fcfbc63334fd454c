#!/usr/bin/env bash
# Pure bonafide-only cluster loss (K 10, alpha 1.0): the method itself.
# Usage: runners/train_cluster_baseline.sh [CONFIG.yaml] [--demo] [--set key=value ...] [--out DIR]
#   real data:  runners/train_cluster_baseline.sh --set data.root=/data/ASVspoof2019/LA
#   demo:       runners/train_cluster_baseline.sh --demo
source "$(dirname "$0")/_common.sh"
exec "$CBL" train --set loss.type=cluster_only "$@"
