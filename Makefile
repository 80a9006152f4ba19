# Everything sets itself up from nothing: `make run` and `make test` create the virtual
# env, install the project and the exchange simulator (its own distribution, in simulator/;
# `up` and the tests start it) and generate the gRPC code first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PROTOS    := $(wildcard proto/*.proto)
PROTO_OUT := $(PROTOS:.proto=_pb2.py)

.PHONY: setup run test lint unit integration bench clean

setup: $(STAMP) $(PROTO_OUT)

$(STAMP): pyproject.toml simulator/pyproject.toml requirements-dashboard.txt
	@echo "==> creating $(VENV) and installing dependencies (first run takes a minute)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]' -e './simulator[test]'
	@# the Dramatiq dashboard pins dramatiq<2 and redis<5 in its metadata: no deps, so nothing is downgraded
	$(BIN)/pip install --quiet --no-deps -r requirements-dashboard.txt
	@touch $(STAMP)

# Every proto/*.proto gets its own modules (proto/admin.proto -> proto/admin_pb2.py, ...).
proto/%_pb2.py: proto/%.proto $(STAMP)
	@echo "==> generating gRPC code from $<"
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m grpc_tools.protoc -I . \
		--python_out=. --grpc_python_out=. --mypy_out=. --mypy_grpc_out=. order_execution/$<

run: setup
	$(BIN)/order-execution up

# The Dockerfile and the Kubernetes manifests are linted too (offline: hadolint and
# kubernetes-validate ship their rules and schemas). K8S_VERSION is the Kubernetes release the
# manifests are checked against; kustomization.yaml is kustomize's, not a resource, so it is left
# out, and kubernetes-validate's warnings (e.g. a kind it has no schema for) fail the target too.
K8S_VERSION   := 1.33.0
K8S_RESOURCES := $(filter-out %/kustomization.yaml,$(wildcard deploy/kubernetes/*.yaml))

# lint-imports checks the import contracts in pyproject.toml ([tool.importlinter]: the layering);
# no cache, since the graph builds in under a second and the cache would be a folder in the checkout.
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache --no-logo
	$(BIN)/hadolint --failure-threshold style deploy/Dockerfile
	@out="$$($(BIN)/kubernetes-validate --strict --quiet -k $(K8S_VERSION) $(K8S_RESOURCES))" \
		&& [ -z "$$out" ] || { echo "$$out"; exit 1; }
	@echo "==> deploy/Dockerfile and deploy/kubernetes/ pass hadolint and kubernetes-validate $(K8S_VERSION)"

unit: setup
	$(BIN)/pytest -m "not integration"

integration: setup
	$(BIN)/pytest -m integration

test: lint
	$(BIN)/pytest

bench: setup
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) .run .mypy_cache .ruff_cache .pytest_cache proto/*_pb2*.py proto/*_pb2*.pyi
