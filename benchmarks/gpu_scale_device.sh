#!/bin/bash
# Runs benchmarks/gpu_scale.py on a bare GPU machine without network, from a copied source tree:
#   <dir>/repo   the project's tracked files (git archive), <dir>/whl   wheels to carry (faiss-cpu)
# Usage: bash <dir>/repo/benchmarks/gpu_scale_device.sh <dir> [gpu_scale.py args]; results in $OUT (default /tmp/out).
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
timeout "${TIMEOUT:-500}" $PY "$ROOT/repo/benchmarks/gpu_scale.py" --out "$OUT/gpu_scale.json" "$@" 2>&1 | tee "$OUT/log.txt"
echo "gpu_scale exit status $?" | tee -a "$OUT/log.txt"
