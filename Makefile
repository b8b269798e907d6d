# AI Shell: build, run and test on one machine.
SHELL := /bin/bash
GO ?= go
BIN := $(CURDIR)/bin
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20
export CDK_DISABLE_CLI_TELEMETRY := 1

.PHONY: all build web run test test-go bench vet fmt clean

all: build

# Web assets: xterm.js from npm (lock file), copied where the relay embeds them.
web: relay/web/static/vendor/.stamp

relay/web/static/vendor/.stamp: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	mkdir -p relay/web/static/vendor
	cp node_modules/@xterm/xterm/lib/xterm.js node_modules/@xterm/xterm/css/xterm.css \
	   node_modules/@xterm/addon-fit/lib/addon-fit.js relay/web/static/vendor/
	touch $@

build: web
	$(GO) build -o $(BIN)/relay ./relay/cmd/relay
	$(GO) build -o $(BIN)/bridge ./relay/cmd/bridge

run: build
	$(BIN)/relay

vet: web
	$(GO) vet ./...

test: web vet test-infra
	$(GO) test -race -count=1 -timeout 12m ./...

bench: build
	$(GO) test -run '^$$' -bench . -benchtime 1x -timeout 10m ./relay/bench/...

fmt:
	gofmt -w $$(git ls-files '*.go')

clean:
	rm -rf $(BIN) relay/web/static/vendor node_modules

# The daily report (R14) from the local logs; flags in ARGS (docs/report.md).
.PHONY: report
report:
	$(GO) run ./lambdas/report $(ARGS)

# The control plane's Lambdas as provided.al2023 arm64 binaries named
# bootstrap, one folder each (bin/lambdas/<name>/), which CDK takes as the
# functions' code assets as they are.
.PHONY: lambdas
lambdas:
	for fn in session restart refill report; do \
	  GOOS=linux GOARCH=arm64 CGO_ENABLED=0 $(GO) build -tags lambda.norpc -trimpath \
	    -ldflags="-s -w" -o $(BIN)/lambdas/$$fn/bootstrap ./lambdas/$$fn || exit 1; \
	done

# The CDK app (infra/, infra/README.md): both environments' templates into
# cdk.out/stage and cdk.out/prod, offline, with the cdk-nag checks; the
# Lambdas' binaries first, since the templates take them as code assets.
.PHONY: synth test-infra
synth: web lambdas
	npx --no-install cdk synth -c env=stage -o cdk.out/stage --quiet
	npx --no-install cdk synth -c env=prod -o cdk.out/prod --quiet

# The infra tests: CDK assertions on the templates, the IAM proof against
# shared/awsops/operations.json, cdk-nag, cfn-lint on every template and
# an offline `cdk synth`. Without -race: they drive jsii's Node.js process.
test-infra: web
	cd infra && $(GO) test -count=1 -timeout 10m ./...
