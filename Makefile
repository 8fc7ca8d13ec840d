# The two set-up commands of the README: `make demo` and `make test`.
PY ?= .venv/bin/python

.venv/bin/python: requirements.txt
	python3 -m venv .venv
	.venv/bin/pip install -q -r requirements.txt
	touch .venv/bin/python

install: .venv/bin/python

demo: install
	PY=$(PY) bash demo.sh

test: install
	. .venv/bin/activate && python -m pytest -q tests

.PHONY: install demo test
