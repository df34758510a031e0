# The two commands of the README. Each sets up what it needs first (scripts/setup.sh).
.PHONY: run test setup four-cases recipes golden

# The main job: the default suite, offline, on real data -> results/offline-default/ (table, figures, report),
# then set beside the project's published run of it (results/published/offline-default/): how this machine compares.
run:
	scripts/setup.sh run
	.venv/bin/tlbench run suites/offline-default.yaml
	.venv/bin/tlbench beside results/published/offline-default results/offline-default

# The documents' four cases as a study: training-set size x strategy -> results/four-cases/ (about 85 min on 2 cores;
# the published study is results/published/four-cases/).
four-cases:
	scripts/setup.sh run
	.venv/bin/tlbench run suites/four-cases.yaml

# The documents' 2017 recipe against a modern one, and the ablation of its components -> results/recipes/
# (published: results/published/recipes/).
recipes:
	scripts/setup.sh run
	.venv/bin/tlbench run suites/recipes.yaml

# The tests, through tox (tox.ini). Extra pytest arguments: make test ARGS="-m 'not slow'"
test:
	scripts/setup.sh test
	.venv/bin/tox run -e py -- $(ARGS)

setup:
	scripts/setup.sh run

# Golden outputs of torchvision's own MobileNetV2 (tests/data/), for the parity test of the import. torch and
# torchvision live in a virtualenv of their own, .venv-torch: tlbench never needs them.
golden:
	scripts/setup.sh run
	[ -x .venv-torch/bin/python ] || python3 -m venv .venv-torch
	.venv-torch/bin/python -m pip install -q torch==2.14.1 torchvision==0.29.1
	.venv-torch/bin/python scripts/golden_torchvision.py \
	  "$$(.venv/bin/python -c 'from bench.torchvision_weights import find_mobilenet_v2_file as f; print(f())')" \
	  "$$(.venv/bin/python -c 'from bench.torchvision_weights import imagenet_photos_dir as d; print(d())')" \
	  tests/data/torchvision_mobilenet_v2_golden.json
