#!/usr/bin/env bash
# One device call that does both GPU jobs of a session, for a workplace whose calls are few and dear (one start
# instead of two, no race to reach the warm machine again): gpu-checks.sh with its steps ended CHECK_SECONDS after
# the start (default 400), then train-gpu.sh for the rest of SECONDS. The checks' logs and JSON come back as one
# archive, checks.tar.gz, beside the training's files (8 files in all, the most a call brings back). Carry
# .offline/kit, .offline/wheels and .offline/train: with the tracked tree that is 55 MiB of the 64 that travel.
#   Usage: tools/offline-gpu/gpu-session.sh SECONDS OUT [CHECK_SECONDS]
set -uo pipefail
cd "$(dirname "$0")/../.."
began=$(date +%s)
seconds=${1:?usage: gpu-session.sh SECONDS OUT [CHECK_SECONDS]}
out=${2:?usage: gpu-session.sh SECONDS OUT [CHECK_SECONDS]}
check_seconds=${3:-400}
checks=/tmp/petmd-checks
rm -rf $checks && mkdir -p $checks "$out"
PETMD_CHECKS_DEADLINE=$(( began + check_seconds )) tools/offline-gpu/gpu-checks.sh $checks 2>&1 | tee $checks/checks.log
echo "== checks ended with status ${PIPESTATUS[0]} after $(( $(date +%s) - began )) s (limit $check_seconds)"
tar -C $checks -czf "$out"/checks.tar.gz .
left=$(( seconds - ($(date +%s) - began) ))
echo "== training ($(date +%T)), $left s left"
tools/offline-gpu/train-gpu.sh $left "$out"
