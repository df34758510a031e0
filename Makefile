# The two commands of the README. Each sets up what it needs first (scripts/setup.sh).
.PHONY: run test setup

# The main job: the default suite, offline, on real data -> results/offline-default/ (table, figures).
run:
	scripts/setup.sh run
	.venv/bin/tlbench run suites/offline-default.yaml

# The tests, through tox (tox.ini). Extra pytest arguments: make test ARGS="-m 'not slow'"
test:
	scripts/setup.sh test
	.venv/bin/tox run -e py -- $(ARGS)

setup:
	scripts/setup.sh run
