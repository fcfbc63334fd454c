#!/usr/bin/env bash
# Weighted cross-entropy only: the baseline the cluster loss must beat.
# Usage: runners/train_ce_baseline.sh [CONFIG.yaml] [--demo] [--set key=value ...] [--out DIR]
#   real data:  runners/train_ce_baseline.sh --set data.root=/data/ASVspoof2019/LA
#   demo:       runners/train_ce_baseline.sh --demo
source "$(dirname "$0")/_common.sh"
exec "$CBL" train --set loss.type=ce_only "$@"
