# The two commands a newcomer needs: `make run` and `make test` (see README.md).
.PHONY: run test e2e-deps lint schema crds bench chart-test fuzz

CLAUDE_CODE := e2e/node_modules/.bin/claude
CODEX_CLI := e2e/node_modules/.bin/codex
GEMINI_CLI := e2e/node_modules/.bin/gemini

run:
	cargo run --release -p tollgate-dataplane --bin tollgate-proxy -- --policy examples/policy.yaml

# The whole suite: unit, integration (fake upstream) and end-to-end with the real Claude Code.
test: e2e-deps
	bash operator/tests/setup-python.sh
	cargo test --workspace --no-fail-fast
	$(MAKE) chart-test

PYTHON_E2E := e2e/.venv/.requirements.sha256

e2e-deps: $(CLAUDE_CODE) $(CODEX_CLI) $(GEMINI_CLI) $(PYTHON_E2E)

# The official MCP Python SDK (MCP upstreams and client) and moto (S3), pinned.
$(PYTHON_E2E): e2e/requirements.txt e2e/setup-python.sh
	bash e2e/setup-python.sh

# The stamp is written only once every pinned CLI really runs: npm skips a failed optional
# platform package silently, leaving a `claude` or `codex` that only prints an error.
CLAUDE_OK := e2e/node_modules/.claude-code-ok

$(CLAUDE_CODE) $(CODEX_CLI) $(GEMINI_CLI): $(CLAUDE_OK)

$(CLAUDE_OK): e2e/package.json e2e/package-lock.json
	npm ci --prefix e2e --no-audit --no-fund
	$(CLAUDE_CODE) --version
	$(CODEX_CLI) --version
	$(GEMINI_CLI) --version
	touch $@

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

schema:
	cargo run -q -p tollgate-dataplane --bin tollgate-proxy -- schema > dataplane/schema/policy.schema.json

crds:
	cargo run -q -p tollgate-operator --bin crdgen -- --out crds
	cp crds/*.yaml charts/tollgate/files/crds/

# The Helm chart (charts/tollgate): lint, render, validate every document (charts/tests), and
# check the rendered sidecar-injection configs with the operator's own parser.
chart-test:
	bash charts/tests/setup-python.sh
	cargo build -q -p tollgate-operator --bin tollgate-operator
	TOLLGATE_OPERATOR_BIN=$${CARGO_TARGET_DIR:-target}/debug/tollgate-operator PYTHONDONTWRITEBYTECODE=1 \
		charts/tests/.venv/bin/python -m unittest discover -s charts/tests -p 'test_*.py'

bench:
	cargo build --release -p tollgate-dataplane -p tollgate-tests
	target/release/bench-gateway
	target/release/bench-ledger
	target/release/bench-audit

# Coverage-guided fuzzing (libFuzzer on stable Rust, dataplane/fuzz): each target for
# FUZZ_SECONDS, then iterations and findings per target. `make test` replays the corpus.
FUZZ_SECONDS ?= 60
fuzz:
	FUZZ_SECONDS=$(FUZZ_SECONDS) bash dataplane/fuzz/run.sh
