# The two commands of the README. Everything they need is installed by tests/scripts/bootstrap.sh.
.PHONY: demo test test-fast stack-start stack-stop sanity lint pytest molecule bench clean

demo: ## Install what is needed, start the local stack, run the main job against inventories/local.
	bash playbooks/demo.sh

test: ## Install what is needed and run every test layer (what CI runs).
	bash tests/scripts/run_all.sh

test-fast: stack-start ## The inner loop: unit and integration tests not marked slow, in parallel, on the running stack.
	bash -c 'source tests/scripts/env.sh && .venv/bin/pytest -p no:randomly -q -W ignore::DeprecationWarning -n 4 --dist load --maxschedchunk 1 -m "not slow"'

stack-start:
	tests/scripts/bootstrap.sh && .venv/bin/python tests/stack/stack.py start

stack-stop:
	.venv/bin/python tests/stack/stack.py stop

sanity lint pytest molecule:
	LAYERS=$@ bash tests/scripts/run_all.sh

clean: stack-stop
	rm -rf .cache build *.tar.gz
