#!/usr/bin/env bash
# GPU speed (issue 17) in one call on a machine with an NVIDIA GPU and Python 3.12 that has jax[cuda], flax,
# optax, torch and msgpack but no network (the device machine of this workplace), after one step here:
#
#   bash benchmarks/gpu_speed.sh fetch   # here: the missing packages as cp312 x86-64 wheels into .whl/
#   bash benchmarks/gpu_speed.sh run     # there (carry .whl): install them to /tmp/site, then measure
#
# `run` prints one JSON line per measure: benchmarks/learner_speed.py (state RLPD E=10 UTD 20; pixels with two
# 128 px cameras, batch 256) and pixel pick_cube with 20 demos (DrQ-RLPD: the serl preset with the conv encoder)
# through `dojo train` with ACTORS actor processes on the machine's cores for BUDGET env steps, and when its
# evaluation first reached 90 % (wall time from the command's start: compilation included). Ray's wheel (~70 MB)
# is over the 64 MiB a device call may carry, so the fleet there is local processes (actors.backend=local); with
# Ray installed, pass BACKEND=ray. imageio-ffmpeg (65 MB, for videos only) stays behind too.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

WHEELS=(mujoco==4.0.0 mujoco-core==4.0.0 mujoco-studio==4.0.0 websockets==17.4 glfw==2.11.0 pyopengl==3.1.10
        zarr==3.1.6 numcodecs==0.16.6 donfig==0.8.1.post1 google-crc32c==1.9.0 omegaconf==2.4.0 gymnasium==1.4.0
        farama-notifications==0.0.6 pyzmq==27.3.0 tensorboardX==2.6.5)

case "${1:-}" in
fetch)
    exclude=$(git rev-parse --git-path info/exclude)
    mkdir -p "$(dirname "$exclude")"
    grep -qx '/.whl/' "$exclude" 2>/dev/null || echo '/.whl/' >> "$exclude"
    for spec in "${WHEELS[@]}"; do
        python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
            --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
            --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any -d .whl "$spec"
    done
    du -sh .whl
    ;;
run)
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site:$PWD" MUJOCO_GL=egl JAX_PLATFORMS=cuda
    nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
    python3 benchmarks/learner_speed.py
    run_dir=$(mktemp -d)/pixels
    start=$(date +%s)
    python3 -m dojo.launch.cli train --sim pick_cube --run "$run_dir" env.obs_mode=pixels env.image_size=128 \
        "actors.count=${ACTORS:-8}" "actors.backend=${BACKEND:-local}" "learner.env_steps=${BUDGET:-20000}" \
        learner.eval_every=2000 learner.eval_episodes=20 | tail -1
    echo "{\"benchmark\": \"gpu_pixel_pick_cube\", \"wall_s\": $(( $(date +%s) - start )), \"run\": \"$run_dir\"}"
    python3 - "$run_dir" <<'EOF'
import json, sys
from dojo import runs
rows = [r for r in runs.read_progress(sys.argv[1]) if r.get("eval_success_rate") is not None]
first = next((r for r in rows if r["eval_success_rate"] >= 0.9), None)
print(json.dumps({"benchmark": "gpu_pixel_pick_cube_first_90", "at": first and {k: first[k] for k in
                  ("env_steps", "updates", "wall_s", "eval_success_rate")}}))
EOF
    ;;
*)
    echo "usage: bash benchmarks/gpu_speed.sh fetch|run" >&2
    exit 2
    ;;
esac
