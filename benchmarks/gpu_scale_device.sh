#!/bin/bash
# Runs the GPU checks on a bare GPU machine without network, from a copied source tree (benchmarks/gpu_scale_prepare.sh
# makes it here): <dir>/repo  the project's tracked files (git archive), <dir>/whl  wheels to carry (faiss-cpu, trl,
# datasets, deepspeed and the pure-Python packages they need that the image lacks).
# Usage: bash <dir>/repo/benchmarks/gpu_scale_device.sh <dir> [gpu_scale.py args]; results in $OUT (default /tmp/out).
#   1. unless ZERO2=0: benchmarks/zero2_check.py on the GPU (tiny recipe, bf16, 1 process): plain vs DeepSpeed
#      ZeRO-2 through accelerate/zero2_2proc.yaml and through the recipe key (accelerate/8gpu.yaml), a checkpoint and
#      a resume; $OUT/zero2_gpu.json + zero2_log.txt, at most ZERO2_TIMEOUT seconds (default 240). ZERO2_ARGS
#      replaces its arguments (e.g. "--device cpu --processes 2" to rehearse on a CPU).
#   2. unless GPU_SCALE=0: benchmarks/gpu_scale.py with the remaining arguments, at most TIMEOUT seconds (default 500);
#      $OUT/gpu_scale.json + log.txt.
# SITE, PKG (install folders) and EXTRA_PYTHONPATH exist for rehearsing it elsewhere.
set -o pipefail
ROOT=$(cd "$1" && pwd); shift
OUT=${OUT:-/tmp/out}; SITE=${SITE:-/tmp/site}; PKG=${PKG:-/tmp/pkg}; PY=${PY:-python3}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,memory.used,clocks.sm,clocks.max.sm,power.draw,power.limit \
    --format=csv > "$OUT/nvidia_smi.txt" 2>&1
ls "$ROOT"/whl/*.whl >/dev/null 2>&1 && \
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" "$ROOT"/whl/*.whl 2>&1 | tail -3
rm -rf "$PKG" && mkdir -p "$PKG/unime_v2" && touch "$PKG/unime_v2/__init__.py"
for folder in modeling_unime_v2 trainers data_builders hub_cards; do ln -s "$ROOT/repo/$folder" "$PKG/unime_v2/$folder"; done
export PYTHONPATH="$SITE:$PKG${EXTRA_PYTHONPATH:+:$EXTRA_PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 \
    TOKENIZERS_PARALLELISM=false
$PY -c "import unime_v2.trainers as t, torch, transformers, peft; print(t.__file__, torch.__version__, \
transformers.__version__, peft.__version__)" 2>&1 | tee "$OUT/env.txt"
$PY -m pip list 2>/dev/null | grep -i -E "^(accelerate|datasets|deepspeed|fsspec|huggingface.hub|pyarrow|pydantic|trl|\
typing.extensions) " | tee -a "$OUT/env.txt"
if [ "${ZERO2:-1}" != 0 ]; then
    ZERO2_ARGS=${ZERO2_ARGS:---device cuda --processes 1 --precisions bf16 --routes accelerate,recipe --timeout 120}
    # shellcheck disable=SC2086
    (cd "$ROOT/repo" && timeout "${ZERO2_TIMEOUT:-240}" $PY benchmarks/zero2_check.py $ZERO2_ARGS \
        --workdir /tmp/zero2 --out "$OUT/zero2_gpu.json") 2>&1 | tee "$OUT/zero2_log.txt"
    echo "zero2_check exit status $?" | tee -a "$OUT/zero2_log.txt"
fi
[ "${GPU_SCALE:-1}" = 0 ] && exit 0
timeout "${TIMEOUT:-500}" $PY "$ROOT/repo/benchmarks/gpu_scale.py" --out "$OUT/gpu_scale.json" "$@" 2>&1 | tee "$OUT/log.txt"
echo "gpu_scale exit status $?" | tee -a "$OUT/log.txt"
