#!/bin/bash
# Prepares, here (PyPI reachable), the folder that benchmarks/gpu_scale_device.sh runs from on a GPU machine without
# network:
#   <dir>/repo   the project at COMMIT (default HEAD; git archive: tracked files only, so commit first)
#   <dir>/whl    Python 3.12 x86-64 wheels of what the device image lacks (/work/.library/device/KINDS.md lists it):
#                faiss-cpu (imported by unime_v2.trainers), trl + datasets (examples/train.py) and their dill and
#                multiprocess, and for the ZeRO-2 check deepspeed with hjson and pydantic (+ pydantic-core,
#                annotated-types, typing-inspection, typing-extensions). PyPI has only deepspeed's sdist: it is built
#                here into a pure-Python wheel (DS_BUILD_OPS=0, no torch needed). The versions are the ones run here
#                against the image's transformers 5.17 / accelerate 1.15 / peft 0.21 / huggingface-hub 1.33.
# Usage: bash benchmarks/gpu_scale_prepare.sh [dir, default .gpubench]   (ignored by git; ~31 MB: carry it)
set -euo pipefail
DIR=${1:-.gpubench}; PY=${PY:-python3}
rm -rf "$DIR/repo" "$DIR/whl" && mkdir -p "$DIR/repo" "$DIR/whl"
git archive "${COMMIT:-HEAD}" | tar -x -C "$DIR/repo"
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
$PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${PLATFORMS[@]}" \
    -d "$DIR/whl" faiss-cpu==1.15.1 trl==1.16.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 hjson==3.1.0 \
    pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 typing-extensions==4.16.0
DS_BUILD_OPS=0 $PY -m pip wheel -q --no-deps --no-binary deepspeed -w "$DIR/whl" deepspeed==0.19.8
ls "$DIR/whl" && du -sh "$DIR/repo" "$DIR/whl"
