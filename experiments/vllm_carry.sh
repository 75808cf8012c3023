#!/usr/bin/env bash
# vLLM 0.26.0's kernel and wrapper files (real, from its wheel, checked against its RECORD) plus jitlab's
# stand-ins for vLLM's package plumbing, into .vllm/ (git-ignored, ~190 KB): what a GPU machine without
# vLLM needs for experiments/vllm_kernels.py. Name `.vllm` in the device call's carry.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m jitlab.vllm.kernel_files --dest .vllm "$@"
