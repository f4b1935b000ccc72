#!/usr/bin/env bash
# The environment of the real-pynq CI path: pynq==4.0.0 (which pins numpy<2) plus this repository installed
# without its dependencies (the runtime needs numpy alone). Usage: bash .ci/pynq_env.sh [VENV_DIR]
# Then: export FPGAFORMER_PYNQ_PYTHON="$VENV_DIR/bin/python" (tests/runtime/test_pynq_path.py uses it).
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${1:-.venv-pynq}"
python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -q "pynq==4.0.0" "numpy<2"
"$venv/bin/python" -m pip install -q --no-deps -e .
"$venv/bin/python" - <<'PY'
import numpy, pynq
import fpgaformer.host.pynq_device, fpgaformer.host.pynq_sim  # noqa: F401
print(f"pynq {pynq.__version__} with numpy {numpy.__version__} ready")
PY
