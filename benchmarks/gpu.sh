#!/usr/bin/env bash
# The GPU benchmark in one command, within 9 minutes on an H200 including the install: stock diffusers
# bf16 against fluxserve none / regular / high at 1024x1024, batch 1 and 4, per stage, with compile seconds
# cold and warm, peak memory, fidelity and the kernels that ran. For a bare CUDA machine that has PyTorch but
# no internet: the other Python packages travel as wheels in .whl/ (`make gpu-wheels`, run where the package
# registry is reachable).
#   bash benchmarks/gpu.sh [more bench_engine.py flags]      results in ${OUT:-benchmarks/results}
# Every result file is written as soon as its numbers exist (engine.json, engine.md, kernels.json,
# preflight.json), so a run stopped at any moment leaves all it measured; log.txt and env.txt beside them.
# Nothing else goes there: the compile cache lives in /tmp (the results folder comes back from the GPU
# machine, and only a few small files do).
set -uo pipefail
cd "$(dirname "$0")/.."
BUDGET_S=${BUDGET_S:-540}   # the whole run, install included
RESULTS=${OUT:-benchmarks/results}
SITE=/tmp/fluxserve-site
mkdir -p "$RESULTS"

run() {
    export PYTHONUNBUFFERED=1
    export TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-/tmp/fluxserve-inductor-cache}
    export TORCHINDUCTOR_FX_GRAPH_CACHE=1 TORCHINDUCTOR_AUTOGRAD_CACHE=1
    mkdir -p "$TORCHINDUCTOR_CACHE_DIR"

    echo "gpu.sh: $(date -u +%FT%TZ), budget ${BUDGET_S} s, results in $RESULTS"
    if ls .whl/*.whl >/dev/null 2>&1; then
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target "$SITE" .whl/*.whl || { echo "gpu.sh: installing .whl/*.whl failed (above)"; return 1; }
        export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}
        echo "gpu.sh: installed $(ls .whl | tr '\n' ' ')into $SITE (${SECONDS} s)"
    else
        echo "gpu.sh: no wheels in .whl/: using this machine's packages (the preflight says what is missing)"
    fi

    {
        date -u +%FT%TZ; uname -a; nvidia-smi 2>&1
        env | grep -E '^(CUDA|TORCH|PYTHON|NVIDIA|OUT|BUDGET)' | sort
        python3 -m pip list --disable-pip-version-check 2>&1
    } >"$RESULTS/env.txt"

    timeout 90 python3 benchmarks/gpu_preflight.py --out "$RESULTS"
    status=$?
    if [ $status -ne 0 ]; then
        [ $status -eq 124 ] && echo "gpu.sh: the preflight took more than 90 s"
        echo "gpu.sh: stopped after the preflight (${SECONDS} s); see $RESULTS/preflight.json"
        return 1
    fi

    # What is left of the budget goes to the benchmark, less 20 s for Python to exit and the files to come
    # back. Its own deadline keeps 60 s more, for the variant in flight when it passes (a compile can outrun
    # its estimate).
    rest=$((BUDGET_S - SECONDS - 20))
    deadline=$((rest - 60))
    echo "gpu.sh: preflight passed (${SECONDS} s); the benchmark gets ${rest} s, deadline ${deadline} s"
    timeout -k 10 "$rest" python3 benchmarks/bench_engine.py --random-full-size --device cuda --sizes 1024 \
        --batches 1,4 --levels none,regular,high --repeats 3 --warmups 1 --deadline-s "$deadline" \
        --out "$RESULTS" "$@"
    status=$?
    [ $status -eq 124 ] && echo "gpu.sh: the benchmark ran out of time; everything it measured is in $RESULTS"
    echo "gpu.sh: done in ${SECONDS} s (status $status)"
    return $status
}

# Everything printed goes to log.txt too; the exit status is the run's, not tee's.
run "$@" 2>&1 | tee -a "$RESULTS/log.txt"
exit "${PIPESTATUS[0]}"
