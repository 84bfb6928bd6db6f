bench:
	bash scripts/bench.sh

test:
	bash scripts/test.sh

run:
	bash scripts/run.sh

.PHONY: bench test run
