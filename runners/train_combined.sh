#!/usr/bin/env bash
# Weighted CE + lambda * cluster loss.
# Usage: runners/train_combined.sh [CONFIG.yaml] [--demo] [--set key=value ...] [--out DIR]
#   real data:  runners/train_combined.sh --set data.root=/data/ASVspoof2019/LA
#   demo:       runners/train_combined.sh --demo
source "$(dirname "$0")/_common.sh"
exec "$CBL" train --set loss.type=combined "$@"
