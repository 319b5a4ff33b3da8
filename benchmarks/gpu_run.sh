#!/usr/bin/env bash
# The whole GPU check as one command (device time is scarce): throughput table, then notebook 05's training path
# (`python -m ftlib.sft`, the CLI that runs notebook 05's config) on CUDA, alone and under torchrun.
#   bash benchmarks/gpu_run.sh OUTDIR        # needs .gpu/tiny-instruct (a tiny random model + tokenizer) and
#                                            # .gpu/alpaca96.jsonl; .whl/ holds pinned wheels when the image lacks them
set -uo pipefail
OUT=${1:-gpu-out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=$PWD:/tmp/site
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" | tee -a "$OUT/gpu.txt"
cli="--model .gpu/tiny-instruct --dataset .gpu/alpaca96.jsonl --format chat --max-length 512 --batch-size 4
     --max-steps 8 --eval-fraction 0.1 --save-every 4"
timeout 200 python3 -m ftlib.sft $cli --output-dir /tmp/sft-one 2>&1 | tail -n 25 | tee "$OUT/cli.txt"
timeout 120 torchrun --standalone --nproc_per_node 1 -m ftlib.sft $cli --max-steps 1 --output-dir /tmp/sft-torchrun \
  2>&1 | tail -n 25 | tee "$OUT/torchrun.txt"
python3 - <<'PY' | tee -a "$OUT/cli.txt"
import json
for d in ("/tmp/sft-one", "/tmp/sft-torchrun"):
    rows = [json.loads(l) for l in open(f"{d}/metrics.jsonl")]
    cfg = json.load(open(f"{d}/run_config.json"))["config"]  # the resolved config the run recorded
    print(d, "steps", len(rows), "of max_steps", cfg.get("max_steps"), "first/last loss", round(rows[0]["loss"], 3),
          round(rows[-1]["loss"], 3))
PY
timeout 420 python3 -m benchmarks.sft_gpu --json "$OUT/sft_gpu.json" --budget 330 2>&1 | tee "$OUT/sft_gpu.txt"
