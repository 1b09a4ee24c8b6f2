# mailgate: every target installs what it needs on a fresh Debian 12 machine.
# Re-running a target is a no-op when nothing changed (stamp files under .venv/).

SHELL := /bin/bash
PYTHON := /usr/bin/python3
VENV := .venv
BIN := $(VENV)/bin
TYPECHECK_VENV := .venv-typecheck

# Debian packages: pyOpenSSL/cryptography/cffi must be Debian's so they run on the system
# libssl.so.3 (see README "Why Debian's pyOpenSSL").
DEB_RUNTIME := python3 python3-venv python3-dev python3-openssl python3-cryptography \
               python3-cffi libssl3 libssl-dev gcc openssl
# Real servers and clients the tests drive: Dovecot, Postfix, dnsmasq, nginx with its mail
# module as the reference the wire tests also run against, logrotate, systemd-analyze, and
# promtool (in Debian's prometheus package) to check the metrics scrape.
DEB_DEMO := curl dovecot-imapd dovecot-pop3d postfix
DEB_TEST := $(DEB_DEMO) iproute2 procps dnsmasq-base nginx-light libnginx-mod-mail logrotate \
            prometheus systemd
DEB_STAMP := $(VENV)/.deb-stamp
DEB_TEST_STAMP := $(VENV)/.deb-test-stamp
DEB_DEMO_STAMP := $(VENV)/.deb-demo-stamp
DEMO_DIR := /tmp/mailgate-demo
PY_STAMP := $(VENV)/.py-stamp

.PHONY: install test unit lint typecheck run demo-stop clean wheel-check demo-cert bench hotpath

# The default error_log is /var/log/mailgate/error.log: without its folder a configuration that
# names no error_log cannot start. 0755 so the unprivileged workers can reopen their logs there.
LOG_DIR := /var/log/mailgate

install: $(PY_STAMP)
	@if [ "$$(id -u)" = 0 ]; then install -d -m 0755 $(LOG_DIR); \
	elif [ ! -d $(LOG_DIR) ]; then echo "note: run as root to create $(LOG_DIR)"; fi

# apt-get runs only when a package is missing, so a second `make install` is silent and quick.
define deb_install
	@missing=$$(for p in $(1); do dpkg-query -W -f='$${db:Status-Status}\n' $$p 2>/dev/null \
	    | grep -qx installed || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	    echo "installing Debian packages: $$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi
endef

$(DEB_STAMP): Makefile
	$(call deb_install,$(DEB_RUNTIME))
	@mkdir -p $(VENV) && touch $@

$(DEB_DEMO_STAMP): Makefile $(DEB_STAMP)
	$(call deb_install,$(DEB_DEMO))
	@touch $@

$(DEB_TEST_STAMP): Makefile $(DEB_STAMP)
	$(call deb_install,$(DEB_TEST))
	@touch $@

$(PY_STAMP): $(DEB_STAMP) setup.cfg pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv --system-site-packages $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[dev]'
	@touch $@

# The whole suite, real servers included (what CI runs).
test: $(PY_STAMP) $(DEB_TEST_STAMP)
	$(BIN)/pytest

# Every test that needs no external server (no Dovecot, Postfix, nginx, dnsmasq, no real
# master): the tests that use a server fixture are marked slow by tests/conftest.py. Under
# 30 s on 2 cores; pytest-xdist (-n 2) was measured no faster, so it runs plain.
unit: $(PY_STAMP)
	$(BIN)/pytest -q -m "not slow"

# lint-imports checks the layer contracts of .importlinter. It finds mailgate.* through the
# editable install of this venv (mailgate is a namespace package with no folder of its own);
# no cache, so that nothing is left in the tree (the check takes under a second).
lint: $(PY_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache .importlinter

# mypy cannot follow the default (lenient) editable install, so it gets a strict one of its own.
typecheck: $(DEB_STAMP)
	@test -x $(TYPECHECK_VENV)/bin/python || $(PYTHON) -m venv --system-site-packages $(TYPECHECK_VENV)
	$(TYPECHECK_VENV)/bin/python -m pip install -q --disable-pip-version-check \
	    -e '.[dev]' --config-settings editable_mode=strict
	cd /tmp && $(CURDIR)/$(TYPECHECK_VENV)/bin/mypy --config-file $(CURDIR)/setup.cfg \
	    --cache-dir $(CURDIR)/.mypy_cache \
	    -p mailgate.config -p mailgate.shm -p mailgate.worker -p mailgate.master

# The wheel must hold every subpackage: build from a clean build/lib, install it alone, import.
wheel-check: $(PY_STAMP)
	rm -rf build/lib build/bdist.* dist
	$(BIN)/python -m pip wheel -q --no-deps -w dist .
	rm -rf /tmp/mailgate-wheel-venv
	$(PYTHON) -m venv --system-site-packages /tmp/mailgate-wheel-venv
	/tmp/mailgate-wheel-venv/bin/pip install -q dist/mailgate-*.whl
	cd /tmp && /tmp/mailgate-wheel-venv/bin/python -c "import mailgate.config, mailgate.shm, \
	    mailgate.worker, mailgate.worker.protocols, mailgate.worker.session.session, \
	    mailgate.master.cli"
	cd /tmp && /tmp/mailgate-wheel-venv/bin/mailgate -v

conf/demo/cert.pem: | $(DEB_STAMP)
	@mkdir -p conf/demo
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
	    -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
	    -keyout conf/demo/key.pem -out conf/demo/cert.pem 2>/dev/null
	cp conf/demo/cert.pem conf/demo/ca.pem

demo-cert: conf/demo/cert.pem

# The demo: Dovecot and Postfix on loopback behind mailgate on conf/quickstart.conf, in the
# foreground; Ctrl-C stops mailgate and then the demo backends.
run: $(PY_STAMP) $(DEB_DEMO_STAMP) conf/demo/cert.pem
	@$(BIN)/python tests/servers/demo.py start $(DEMO_DIR) </dev/null
	@sed 's|@CA@|$(CURDIR)/conf/demo/ca.pem|' conf/quickstart-try.txt
	@trap '$(BIN)/python tests/servers/demo.py stop $(DEMO_DIR)' EXIT; \
	    $(BIN)/mailgate -c conf/quickstart.conf

demo-stop:
	$(BIN)/python tests/servers/demo.py stop $(DEMO_DIR)

# mailgate against nginx's mail proxy on one config file; rewrites BENCHMARKS.md's results
# (about 12 min; `make bench BENCH_ARGS=--quick` for a smoke run of about 2 min). perf is
# optional: without it the harness skips the per-library CPU split. valgrind is for
# `make hotpath HOTPATH_ARGS=--instructions` (bench/hotpath.py: one gateway process's cost per
# connection, for work on the hot path).
DEB_BENCH := linux-perf valgrind
DEB_BENCH_STAMP := $(VENV)/.deb-bench-stamp

$(DEB_BENCH_STAMP): Makefile $(DEB_STAMP)
	$(call deb_install,$(DEB_BENCH))
	@touch $@

bench: $(PY_STAMP) $(DEB_TEST_STAMP) $(DEB_BENCH_STAMP)
	@test -x $(BIN)/py-spy || $(BIN)/python -m pip install -q --disable-pip-version-check py-spy
	$(BIN)/python bench/run.py $(BENCH_ARGS)

hotpath: $(PY_STAMP) $(DEB_TEST_STAMP) $(DEB_BENCH_STAMP)
	@test -x $(BIN)/py-spy || $(BIN)/python -m pip install -q --disable-pip-version-check py-spy
	$(BIN)/python -m bench.hotpath $(HOTPATH_ARGS)

clean:
	rm -rf $(VENV) $(TYPECHECK_VENV) build dist *.egg-info .pytest_cache .mypy_cache \
	    .ruff_cache conf/demo
	find . -name __pycache__ -prune -exec rm -rf {} +
