# The two commands a newcomer needs: `make run` and `make test` (see README.md).
.PHONY: run test e2e-deps lint schema crds bench

CLAUDE_CODE := e2e/node_modules/.bin/claude

run:
	cargo run --release -p tollgate-dataplane --bin tollgate-proxy -- --policy examples/policy.yaml

# The whole suite: unit, integration (fake upstream) and end-to-end with the real Claude Code.
test: e2e-deps
	bash operator/tests/setup-python.sh
	cargo test --workspace --no-fail-fast

e2e-deps: $(CLAUDE_CODE)

$(CLAUDE_CODE): e2e/package.json e2e/package-lock.json
	npm ci --prefix e2e --no-audit --no-fund
	touch $@

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

schema:
	cargo run -q -p tollgate-dataplane --bin tollgate-proxy -- schema > dataplane/schema/policy.schema.json

crds:
	cargo run -q -p tollgate-operator --bin crdgen -- --out crds

bench:
	cargo build --release -p tollgate-dataplane -p tollgate-tests
	target/release/bench-gateway
	target/release/bench-ledger
