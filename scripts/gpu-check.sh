#!/usr/bin/env bash
# The one-call GPU check, for a GPU machine with JAX but neither TensorFlow nor a package registry, to which only
# this tree and the bundle of scripts/gpu-bundle.sh are carried: install the bundle offline, verify the imported
# weights, run suites/gpu-check.yaml on the JAX backend within a hard time limit, and summarise it.
#   scripts/gpu-check.sh [--dry-run] [BUNDLE_DIR]      (BUNDLE_DIR default: bundle)
# Everything lands in results/gpu-<device>/: the records (gpu-check/runs/), the table, summary.txt and this log.
# --dry-run rehearses the same steps on the CPU at a tiny scale (seconds a run), for CI.
# Environment: PYTHON (default python3), GPU_CHECK_LIMIT_S (default 480: the whole check, in seconds),
# GPU_CHECK_RESULTS (default results: the root under which gpu-<device>/ is made).
set -uo pipefail
dry=0
[ "${1:-}" = --dry-run ] && { dry=1; shift; }
bundle=${1:+$(realpath -m "$1")}  # a BUNDLE_DIR given is relative to where the script is called from
cd "$(dirname "$0")/.."
bundle=${bundle:-$PWD/bundle}
py=${PYTHON:-python3}
limit=${GPU_CHECK_LIMIT_S:-480}
suite=suites/gpu-check.yaml
export KERAS_BACKEND=jax PYTHONUNBUFFERED=1
# The tiny scale: whole batches, and the network's first blocks alone, since XLA's compile time grows with the
# layers (the whole MobileNetV2 takes minutes to compile five times on 2 CPU cores).
tiny=(--set epochs=2 --set train_size=64 --set val_size=32 --set input_size=32 --set batch_size=16
      --set cut=block_2_add)

die() { echo "gpu-check: $1" >&2; exit "${2:-2}"; }

device_name() {
  if [ "$dry" = 1 ]; then
    echo cpu-dry-run
  elif command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name --format=csv,noheader | head -1
  else
    "$py" -c 'import jax; print(jax.devices()[0].device_kind)'
  fi
}

missing() {  # the modules among "$@" that this Python cannot import
  "$py" -c 'import importlib.util as u, sys; print(" ".join(m for m in sys.argv[1:] if u.find_spec(m) is None))' "$@"
}

if [ "$dry" = 1 ]; then
  export JAX_PLATFORMS=cpu  # a rehearsal, even where a GPU is present
else
  "$py" -c 'import jax, sys; sys.exit(jax.default_backend() == "cpu")' \
    || die "JAX sees no GPU ($("$py" -c 'import jax; print(jax.devices())' 2>&1 | tail -1)); rehearse with --dry-run"
fi
device=$(device_name) || die "cannot name the device: neither nvidia-smi nor jax.devices() answered"
slug=$(echo "$device" | tr '[:upper:]' '[:lower:]' | sed -E 's/[^a-z0-9]+/-/g; s/^-|-$//g')
[ -n "$slug" ] || die "cannot name the device: nvidia-smi and jax.devices() gave no name"
root=${GPU_CHECK_RESULTS:-results}/gpu-$slug
folder=$root/gpu-check
mkdir -p "$root" || die "cannot create $root"
exec > >(tee -a "$root/gpu-check.log") 2>&1  # appended: a second call after the time limit keeps the first's
echo "gpu-check: $device -> $root (time limit ${limit} s$([ "$dry" = 1 ] && echo ', dry run: CPU, tiny scale'))"

echo "== 1/5 offline install [${SECONDS} s]"
need=$(missing keras platformdirs)
if [ -z "$need" ]; then
  echo "keras importable: bundle install skipped"
else
  ls "$bundle"/wheels/*.whl >/dev/null 2>&1 || die "$need not importable and no wheels in $bundle/wheels: run \
scripts/gpu-bundle.sh $bundle on a machine with a registry and carry $bundle/ here"
  "$py" -m pip install -q --no-index --no-deps "$bundle"/wheels/*.whl || die "pip could not install $bundle/wheels"
fi
if "$py" -c 'from importlib.metadata import version; version("tlbench")' 2>/dev/null; then
  echo "tlbench installed: skipped"
else
  # Not needed to run (python -m bench runs from the tree), only for the records' tlbench version.
  "$py" -m pip install -q --no-index --no-deps --no-build-isolation -e . \
    || echo "pip could not install tlbench: running it from the tree (python -m bench)"
fi
need=$(missing keras platformdirs pandas matplotlib yaml PIL scipy markdown_it)
[ -z "$need" ] || die "tlbench needs these Python modules, not installed here: $need (add their wheels to \
$bundle/wheels)"
if [ -d "$bundle/data" ]; then
  export TLBENCH_DATA_DIR=$bundle/data
else
  echo "no $bundle/data: Fashion-MNIST from ~/.keras/datasets or /usr/share/datasets"
fi

echo "== 2/5 weights [${SECONDS} s]"
"$py" -m bench weights verify || die "the imported weights failed their check (above): no run started" $?

echo "== 3/5 suite $suite on JAX [${SECONDS} s]"
scale=(); [ "$dry" = 1 ] && scale=("${tiny[@]}")
left=$((limit - SECONDS - 30))  # 30 s kept for the summary
[ "$left" -gt 0 ] || die "no time left for the runs (${SECONDS} s of ${limit} s spent)" 124
timeout --kill-after=20 "$left" "$py" -m bench run "$suite" --results "$root" --quiet "${scale[@]}"
rc=$?
[ "$rc" = 124 ] && echo "time limit: the runs were stopped after ${left} s; the runs recorded so far are kept"

echo "== 4/5 summary [${SECONDS} s]"
"$py" -m bench gpu-summary "$folder"
summary_rc=$?
[ "$rc" = 0 ] && rc=$summary_rc

echo "== 5/5 commit [${SECONDS} s]: the records and their summary, with"
# Only what exists: a run stopped by the time limit leaves no table, and git refuses a path that is not there.
files=()
for f in "$folder"/runs/*.json "$folder"/suite.yaml "$folder"/table.md "$folder"/summary.txt; do
  [ -e "$f" ] && files+=("$f")
done
echo "git add -f ${files[*]}"
echo "gpu-check: done in ${SECONDS} s, exit $rc"
exit "$rc"
