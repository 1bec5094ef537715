#!/usr/bin/env bash
# The quick start's main job: export ESC x4 fp16 (validated against PyTorch), benchmark it
# NTIRE-style with ONNX Runtime on CPU on crops of the bundled photograph, and write the report.
# Weights: seeded random unless SRDEPLOY_DEMO_WEIGHTS is set (e.g. "official" where the
# network can reach the authors' release); the report labels random-weight quality figures.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
WEIGHTS=()
if [ -n "${SRDEPLOY_DEMO_WEIGHTS:-}" ]; then WEIGHTS=(--weights "$SRDEPLOY_DEMO_WEIGHTS"); fi
rm -rf out/bench
$BIN/sr-export --model esc --scale 4 --fp16 "${WEIGHTS[@]}" -o out/export
# The NTIRE 2026 baseline (SPAN ch28) on the same data, device and backend, so the report can
# compute the challenge score against a baseline measured here (never against another GPU's).
$BIN/sr-bench --model span --scale 4 --data-from-image tests/data/baboon.png --mode ntire -o out/bench
$BIN/sr-bench --onnx out/export/esc_x4_fp16.onnx --data-from-image tests/data/baboon.png \
    --mode ntire -o out/bench --report report
echo "report: $(pwd)/report/index.html"
