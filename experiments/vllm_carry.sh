#!/usr/bin/env bash
# vLLM 0.26.0's kernel and wrapper files (real, from its wheel, checked against its RECORD) plus jitlab's
# stand-ins for vLLM's package plumbing, into .vllm/ (git-ignored, ~190 KB, one 304 MB wheel download):
# enough for experiments/vllm_kernels.py and `experiments/e2e_decode.py --attention vllm` (--vllm-dir .vllm,
# the default) on a machine without vLLM installed. Copying the checkout to another machine? Copy .vllm/ too.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m jitlab.vllm.kernel_files --dest .vllm "$@"
