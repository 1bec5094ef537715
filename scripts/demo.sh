#!/usr/bin/env bash
# The quick start's main job (README "Quick start", docs/runtime.md "The demo"): three models
# measured NTIRE-style with ONNX Runtime on CPU on corner crops of the bundled photograph, one report.
#   1. SPAN x4 (the NTIRE 2026 baseline), seeded random weights: the score's baseline, measured here.
#   2. AGDN x2 with the bundled released checkpoint tests/data/AGDN_x2.pth: real weights, so its
#      PSNR columns mean something.
#   3. ESC x4 fp16: seeded random weights (labelled so) unless SRDEPLOY_DEMO_WEIGHTS is set (e.g.
#      "official" where the network can reach the authors' release).
# bench.log in out/bench keeps every run (appended under a header); results.json is updated by key.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
IMG=tests/data/baboon.png
ESC_WEIGHTS=()
if [ -n "${SRDEPLOY_DEMO_WEIGHTS:-}" ]; then ESC_WEIGHTS=(--weights "$SRDEPLOY_DEMO_WEIGHTS"); fi
$BIN/sr-export --model esc --scale 4 --fp16 "${ESC_WEIGHTS[@]}" -o out/export
$BIN/sr-export --model agdn --scale 2 --weights tests/data/AGDN_x2.pth -o out/export
# The NTIRE 2026 baseline (SPAN ch28) on the same data, device and backend, so the report can
# compute the challenge score against a baseline measured here (never against another GPU's).
$BIN/sr-bench --model span --scale 4 --data-from-image "$IMG" --mode ntire -o out/bench
$BIN/sr-bench --onnx out/export/agdn_x2.onnx --data-from-image "$IMG" --mode ntire -o out/bench
$BIN/sr-bench --onnx out/export/esc_x4_fp16.onnx --data-from-image "$IMG" --mode ntire -o out/bench
$BIN/sr-report out/bench/results.json -o report
echo "report: $(pwd)/report/index.html"
