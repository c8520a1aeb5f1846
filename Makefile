# graceful.gunicorn: build, lint, test and demo.
#   make demo   boot three local test hosts, deploy the example ASGI app, print their status
#   make test   lint, unit and integration tests, the molecule scenarios and the AWX jobs on local test hosts
#   make arbiter-wheel  rebuild the arbiter wheel the role ships, after a change in arbiter/
#   make change-proof  every kind of change (environment, secret, config, workers, code, binds, unit, removal) under load
#   make bench-airflow  Airflow's API server under periodic refreshes: AirflowArbiter beside the graceful arbiter
#   make test-airflow  examples/airflow on a test host: deployed, refreshed and upgraded under load
#   make test-matrix  the support matrix: Debian bullseye and trixie hosts, gunicorn 25.1 to 27, ansible-core 2.17 to 2.20
# Both run as root on Debian or Ubuntu: the test hosts are systemd-nspawn containers on a bridge.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
BUILD := $(CURDIR)/build
COLLECTIONS := $(BUILD)/collections
COLLECTION_LINK := $(COLLECTIONS)/ansible_collections/graceful/gunicorn
WHEELHOUSE := $(BUILD)/wheelhouse
DEB_PACKAGES := systemd-container debootstrap iproute2 openssh-client rsync wrk
export PATH := $(BIN):$(PATH)
export ANSIBLE_COLLECTIONS_PATH := $(COLLECTIONS)
export ANSIBLE_CONFIG := $(CURDIR)/tests/ansible.cfg
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: help deps venv collection wheelhouse lint ruff yamllint ansible-lint sanity galaxy-import docs-lint unit \
        integration molecule awx hosts test demo rollout-proof change-proof bench-fleet bench-airflow test-airflow airflow-wheelhouse test-matrix lab-down build clean arbiter-wheel

help:
	@sed -n 's/^#   //p' Makefile

deps: ## Debian packages the test hosts and the load client need
	@missing=""; for p in $(DEB_PACKAGES); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; fi

$(VENV)/.installed: tests/requirements-controller.txt arbiter/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r tests/requirements-controller.txt
	touch $@

# The arbiter is installed, not linked: the masters the tests start run it from the venv.
$(VENV)/.arbiter: $(VENV)/.installed arbiter/pyproject.toml $(shell find arbiter/src -name '*.py')
	$(BIN)/pip install -q --no-deps --no-build-isolation --force-reinstall ./arbiter
	touch $@

venv: $(VENV)/.installed $(VENV)/.arbiter

collection: ## make the checkout visible to Ansible as graceful.gunicorn
	@mkdir -p $(dir $(COLLECTION_LINK))
	@ln -sfn $(CURDIR) $(COLLECTION_LINK)

# The arbiter wheel the role ships (roles/server/files), rebuilt reproducibly from arbiter/ after a change there;
# make unit fails while the shipped one is stale.
arbiter-wheel: venv
	$(BIN)/python tests/build_arbiter_wheel.py

wheelhouse: venv
	$(BIN)/python tests/lab/build_wheelhouse.py --out $(WHEELHOUSE)

ruff: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

yamllint: venv
	$(BIN)/yamllint -s .

ansible-lint: venv collection
	$(BIN)/ansible-lint --profile production

# ansible-test needs the tree at .../ansible_collections/graceful/gunicorn outside this git checkout.
SANITY_ROOT := $(or $(TMPDIR),/tmp)/graceful-gunicorn-sanity
ANSIBLE_TEST_PIP_BOOTSTRAP := $(HOME)/.ansible/test/cache/get_pip_24_2.py

sanity: venv
	@test -s $(ANSIBLE_TEST_PIP_BOOTSTRAP) || install -D -m 0644 tests/sanity/get_pip_offline.py $(ANSIBLE_TEST_PIP_BOOTSTRAP)
	rm -rf $(SANITY_ROOT) && mkdir -p $(SANITY_ROOT)/ansible_collections/graceful/gunicorn
	rsync -a --exclude-from=tests/sanity/rsync-exclude ./ $(SANITY_ROOT)/ansible_collections/graceful/gunicorn/
	cd $(SANITY_ROOT)/ansible_collections/graceful/gunicorn && \
	  $(BIN)/ansible-test sanity --python 3.11 --color no --requirements > $(BUILD)/sanity.log 2>&1 \
	  || { grep -E '^(ERROR|FATAL)' $(BUILD)/sanity.log; exit 1; }
	@grep -E '^Running sanity test' $(BUILD)/sanity.log | wc -l | xargs -I{} echo "ansible-test sanity: {} tests passed"
	rm -rf $(SANITY_ROOT)

# What Galaxy does with the tarball (ansible-lint and ansible-doc inside galaxy-importer); any warning fails.
galaxy-import: venv
	$(BIN)/python tests/lint/galaxy_import.py --out $(BUILD)/dist

# Module, filter and role documentation, and the docsite guides, as antsibull-docs renders them.
docs-lint: venv collection
	cd $(COLLECTION_LINK) && $(BIN)/antsibull-docs lint-collection-docs --plugin-docs .

lint: ruff yamllint ansible-lint sanity galaxy-import docs-lint

unit: venv collection
	$(BIN)/pytest -q tests/unit tests/proof arbiter/tests/unit

# The Debian releases make test boots: bookworm everywhere, and a trixie host beside a bookworm one in the molecule
# default scenario (molecule/default/molecule.yml), so that a regression on the newer release cannot land silently.
TEST_RELEASES := bookworm,trixie

# The suites on loopback and the suites on test hosts run side by side (tests/side_by_side.py): both mostly wait.
LOOPBACK_SUITES := $(BIN)/pytest -q tests/integration arbiter/tests/integration
HOST_SUITES := $(BIN)/pytest -q arbiter/tests/systemd tests/systemd
MOLECULE_SUITES := tests/molecule_scenarios.sh
# The examples/awx wrappers run through ansible-runner, as AWX runs them, on three lab hosts.
AWX_SUITE := $(BIN)/python tests/lab/lab.py run --name awx --hosts 3 -- $(BIN)/pytest -q tests/awx
SIDE_BY_SIDE := $(BIN)/python tests/side_by_side.py --logs $(BUILD)/logs

integration: deps venv collection wheelhouse
	$(BIN)/python tests/lab/lab.py rootfs
	$(SIDE_BY_SIDE)/integration -- "$(LOOPBACK_SUITES)" "$(HOST_SUITES)"

molecule: deps venv collection wheelhouse
	$(BIN)/python tests/lab/lab.py rootfs --release $(TEST_RELEASES)
	$(MOLECULE_SUITES)

awx: deps venv collection wheelhouse
	$(BIN)/python tests/lab/lab.py rootfs
	$(AWX_SUITE)

# Each molecule scenario and the AWX jobs boot their own hosts on their own bridges, so they run side by side.
HOST_PHASE := $(SIDE_BY_SIDE)/hosts -- "$(MOLECULE_SUITES) default" "$(MOLECULE_SUITES) rollout" "$(AWX_SUITE)"

hosts: deps venv collection wheelhouse
	$(BIN)/python tests/lab/lab.py rootfs --release $(TEST_RELEASES)
	$(HOST_PHASE)

# Lint and the unit tests keep about one core busy while the integration suites mostly wait on gunicorn and the
# test hosts, so the three run side by side, and beside them the root filesystems of the other releases the host
# phase boots, where they are not cached yet; then the molecule scenarios beside the AWX jobs.
test: deps venv collection wheelhouse
	$(BIN)/python tests/lab/lab.py rootfs
	$(SIDE_BY_SIDE)/checks -- "$(MAKE) --no-print-directory lint unit" "$(LOOPBACK_SUITES)" "$(HOST_SUITES)" \
		"$(BIN)/python tests/lab/lab.py rootfs --release $(TEST_RELEASES)"
	$(HOST_PHASE)

demo: deps venv collection wheelhouse
	$(BIN)/python tests/lab/lab.py rootfs
	$(BIN)/python tests/lab/lab.py run --name demo --hosts 3 -- $(BIN)/python tests/demo/rollout.py demo

# The rolling-upgrade proof: v1 to v2 under load, a v3 that breaks on one host, a rollback to v1.
rollout-proof: deps venv collection wheelhouse
	$(BIN)/python tests/lab/lab.py rootfs
	$(BIN)/python tests/lab/lab.py run --name proof --hosts 3 -- $(BIN)/python tests/demo/rollout.py proof

# Every kind of change through the deploy playbook under full-speed keep-alive load, one line per change.
change-proof: deps venv collection wheelhouse
	$(BIN)/python tests/lab/lab.py rootfs
	$(BIN)/python tests/lab/lab.py run --name change --hosts 1 -- $(BIN)/python tests/proof/change_proof.py

# Fleet speed: N hosts upgraded one at a time under full load, without and with staging (bench/fleet.py).
HOSTS ?= 10
# How many of them also upgrade without staging, for the comparison (0: all).
UNSTAGED_HOSTS ?= 0
bench-fleet: deps venv collection wheelhouse
	$(BIN)/python tests/lab/lab.py rootfs
	$(BIN)/python tests/lab/lab.py run --name fleet --hosts $(HOSTS) -- \
		$(BIN)/python bench/fleet.py --unstaged-hosts $(UNSTAGED_HOSTS)

# Airflow's API server under periodic worker refreshes, on loopback: Airflow's own gunicorn master, the graceful
# arbiter without and with the master's warm-up, and uvicorn, in alternating rounds (bench/airflow_refresh.py).
AIRFLOW_VENV := $(BUILD)/airflow/venv
AIRFLOW_ROUNDS ?= 3
AIRFLOW_SECONDS ?= 45
AIRFLOW_INTERVAL ?= 10
ARBITER_WHEEL := $(wildcard roles/server/files/graceful_gunicorn_arbiter-*.whl)

$(AIRFLOW_VENV)/.installed: examples/airflow/requirements.txt $(ARBITER_WHEEL)
	rm -rf $(AIRFLOW_VENV)
	$(PYTHON) -m venv $(AIRFLOW_VENV)
	$(AIRFLOW_VENV)/bin/pip install -q -r examples/airflow/requirements.txt
	$(AIRFLOW_VENV)/bin/pip install -q --no-deps $(ARBITER_WHEEL)
	touch $@

bench-airflow: deps venv $(AIRFLOW_VENV)/.installed
	$(BIN)/python bench/airflow_refresh.py --venv $(AIRFLOW_VENV) --rounds $(AIRFLOW_ROUNDS) \
		--seconds $(AIRFLOW_SECONDS) --interval $(AIRFLOW_INTERVAL)

# examples/airflow on one test host, from a wheelhouse of its own with Airflow's pinned packages
# (tests/proof/airflow_proof.py): deployed, then refreshed and upgraded with its migration under load.
AIRFLOW_WHEELHOUSE := $(BUILD)/wheelhouse-airflow

airflow-wheelhouse: venv
	$(BIN)/python tests/lab/build_wheelhouse.py --out $(AIRFLOW_WHEELHOUSE) --also examples/airflow/requirements.txt

test-airflow: deps venv collection airflow-wheelhouse
	$(BIN)/python tests/lab/lab.py rootfs
	$(BIN)/python tests/lab/lab.py run --name airflow --hosts 1 -- \
		$(BIN)/python tests/proof/airflow_proof.py --wheelhouse $(AIRFLOW_WHEELHOUSE)

# Every cell of the README's support matrix that make test leaves out, in lanes side by side (tests/matrix/run.py):
# ansible-core 2.17 to 2.20 (unit, sanity), gunicorn 25.1 to 27 (the arbiter on loopback), bullseye and trixie hosts
# (molecule default, the SIGUSR2 hand-over), and a rolling upgrade under load across one host of each release.
# MATRIX_ONLY="trixie" runs the cells whose name holds that word.
MATRIX_ONLY ?=
test-matrix: deps venv collection wheelhouse
	$(BIN)/python tests/matrix/run.py --logs $(BUILD)/matrix/logs $(foreach only,$(MATRIX_ONLY),--only $(only))

lab-down:
	$(BIN)/python tests/lab/lab.py down --name demo

build: venv ## the collection tarball, as Galaxy would get it
	mkdir -p dist && $(BIN)/ansible-galaxy collection build --force --output-path dist .

clean:
	rm -rf $(BUILD) dist .pytest_cache .ruff_cache
