#!/usr/bin/env bash
# Sets up dojo in ./.venv (idempotent; fast when nothing changed).
#   bash setup.sh            robot + sim + learner extras
#   bash setup.sh --dev      ... plus the test tools and ray (its fleet tests)
# On a machine without an NVIDIA GPU, torch is installed as the CPU build first, so that no
# extra pulls several GB of CUDA wheels. Set DOJO_EXTRAS to choose extras yourself.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

extras="${DOJO_EXTRAS:-robot,sim,learn,vlm,lerobot,calib}"
[[ "${1:-}" == "--dev" ]] && extras="$extras,ray,dev"
python="${PYTHON:-python3}"

if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "setup.sh: dojo needs Python >= 3.11, got $("$python" --version 2>&1)" >&2
    exit 1
fi
[[ -x .venv/bin/python ]] || "$python" -m venv .venv

stamp="$(cat pyproject.toml setup.sh | sha256sum | cut -c1-16) $extras"
if [[ -f .venv/.dojo-setup && "$(cat .venv/.dojo-setup)" == "$stamp" ]]; then
    exit 0
fi
# This machine's pip config names local index folders that may not exist; hide that noise only.
quiet() { grep -v "is ignored: it is neither a file nor a directory" || true; }
pip=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
if [[ ",$extras," == *",vlm,"* ]] && ! command -v nvidia-smi >/dev/null 2>&1; then
    "${pip[@]}" "torch==2.13.0" 2> >(quiet >&2)
fi
"${pip[@]}" -e ".[$extras]" 2> >(quiet >&2)
.venv/bin/python -c "import dojo" || { echo "setup.sh: install failed" >&2; exit 1; }
# pyrealsense2 loads the libusb-1.0 system library at import; without it RealSense cameras (and their tests,
# which then skip) fail. As root on Debian/Ubuntu, the test set-up installs it.
if .venv/bin/python -m pip show --quiet pyrealsense2 >/dev/null 2>&1 \
        && ! .venv/bin/python -c "import pyrealsense2" >/dev/null 2>&1; then
    if [[ ",$extras," == *",dev,"* && $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; then
        { apt-get install -y -q libusb-1.0-0 || { apt-get update -q && apt-get install -y -q libusb-1.0-0; }; } \
            >/dev/null 2>&1 || true
    fi
    .venv/bin/python -c "import pyrealsense2" >/dev/null 2>&1 \
        || echo "setup.sh: pyrealsense2 does not import; install libusb (Debian/Ubuntu: apt-get install libusb-1.0-0)" >&2
fi
echo "$stamp" > .venv/.dojo-setup
