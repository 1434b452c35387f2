#!/usr/bin/env bash
# Short GPU check (a few minutes on one GPU node): one FNO per registered optimizer on CUDA,
# per-step time (amortised over whole update periods, Hessian/statistics steps apart) and peak
# memory relative to Adam -> results/benchmarks/optimizers_gpu.json.
# Fails at once, saying so, where no CUDA device is visible.
#
#   benchmarks/gpu_check.sh              # on a GPU node
#   benchmarks/gpu_check.sh --cpu-dry-run  # anywhere: same script path on CPU with a tiny FNO
#                                          # -> results/benchmarks/optimizers_gpu_dryrun.json
set -euo pipefail
cd "$(dirname "$0")/.."
py="${PYTHON:-.venv/bin/python}"
[[ -x "$py" ]] || py=python3
dry=0
case "${1:-}" in
  "") ;;
  --cpu-dry-run) dry=1 ;;
  *) echo "usage: $0 [--cpu-dry-run]" >&2; exit 2 ;;
esac
if ! "$py" -c "import torch" 2>/dev/null; then
  echo "gpu_check: torch is not installed for $py; run 'make venv' first (or set PYTHON=...)" >&2
  exit 2
fi
if [[ $dry == 1 ]]; then
  timeout 300 "$py" benchmarks/optimizers.py --device cpu --models fno --grid 16 --batch 4 \
    --width 8 --modes 4 --layers 2 --steps 1 --rounds 1 --warmup 1 \
    --out results/benchmarks/optimizers_gpu_dryrun.json
  echo "gpu_check: CPU dry run passed (results/benchmarks/optimizers_gpu_dryrun.json); run without --cpu-dry-run on a GPU node"
  exit 0
fi
if ! "$py" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "gpu_check: no CUDA device visible to torch (nvidia-smi / CUDA_VISIBLE_DEVICES); run it on a GPU node" >&2
  exit 2
fi
"$py" -c "import torch; print('device:', torch.cuda.get_device_name(0), 'torch', torch.__version__)"
timeout 300 "$py" benchmarks/optimizers.py --device cuda --models fno --grid 64 --batch 16 \
  --width 32 --modes 12 --layers 4 --steps 10 --rounds 3 --out results/benchmarks/optimizers_gpu.json
echo "wrote results/benchmarks/optimizers_gpu.json"
