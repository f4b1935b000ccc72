#!/usr/bin/env bash
# The environment of the real-pynq CI path: pynq (4.0.0 by default; 3.1.2 is the last line with PYNQ-Z1/Z2
# images) with numpy<2 (both pin it) plus this repository installed without its dependencies (the runtime needs
# numpy alone). Usage: bash .ci/pynq_env.sh [VENV_DIR] [PYNQ_VERSION]
# Then: export FPGAFORMER_PYNQ_PYTHON="$VENV_DIR/bin/python" (4.0.0) or FPGAFORMER_PYNQ31_PYTHON=... (3.1.2);
# tests/runtime/test_pynq_path.py runs once per variable set.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${1:-.venv-pynq}"
version="${2:-4.0.0}"
python3 -m venv "$venv"
echo "*" > "$venv/.gitignore"  # untracked, whatever its name (Python >= 3.13 venv does this itself)
"$venv/bin/python" -m pip install -q --upgrade pip
# pycparser<3: pynq's MicroBlaze RPC (imported by `import pynq.lib`) needs pycparser.plyparser, gone in 3.0;
# 4.0.0 pins it, 3.1.2 does not
"$venv/bin/python" -m pip install -q "pynq==$version" "numpy<2" "pycparser<3"
"$venv/bin/python" -m pip install -q --no-deps -e .
"$venv/bin/python" - "$version" <<'PY'
import sys
import numpy, pynq, pynq.lib.dma  # pynq.lib: the drivers the test binds (DMA, AxiGPIO)
import fpgaformer.host.pynq_device, fpgaformer.host.pynq_sim  # noqa: F401
if pynq.__version__ != sys.argv[1]:
    sys.exit(f"asked for pynq {sys.argv[1]}, got {pynq.__version__}")
print(f"pynq {pynq.__version__} with numpy {numpy.__version__} ready")
PY
