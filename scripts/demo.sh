#!/usr/bin/env bash
# The main job of the quick start. Until the exporter and runtime land, it super-resolves the
# bundled photograph with the real AGDN x2 checkpoint.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
mkdir -p out
$BIN/sr-upscale --model agdn --scale 2 --weights tests/data/AGDN_x2.pth tests/data/baboon.png -o out/
