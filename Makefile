# The two set-up commands of the README: `make demo` and `make test`.
.PHONY: setup demo test

.venv/.installed: pyproject.toml scripts/setup.sh
	bash scripts/setup.sh
	touch $@

setup: .venv/.installed

demo: setup
	.venv/bin/avparse demo

test: setup
	bash scripts/test.sh
