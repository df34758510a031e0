# The two commands of the README. Each sets up what it needs first (scripts/setup.sh).
.PHONY: run test setup four-cases recipes

# The main job: the default suite, offline, on real data -> results/offline-default/ (table, figures).
run:
	scripts/setup.sh run
	.venv/bin/tlbench run suites/offline-default.yaml

# The documents' four cases as a study: training-set size x strategy -> results/four-cases/ (about 85 min on 2 cores).
four-cases:
	scripts/setup.sh run
	.venv/bin/tlbench run suites/four-cases.yaml

# The documents' 2017 recipe against a modern one, and the ablation of its components -> results/recipes/.
recipes:
	scripts/setup.sh run
	.venv/bin/tlbench run suites/recipes.yaml

# The tests, through tox (tox.ini). Extra pytest arguments: make test ARGS="-m 'not slow'"
test:
	scripts/setup.sh test
	.venv/bin/tox run -e py -- $(ARGS)

setup:
	scripts/setup.sh run
