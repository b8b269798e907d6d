# The agent task's image (ClusterStack): the bridge as the entry point and
# the tools an agent session needs. Built by `cdk deploy` from the
# repository root, for linux/arm64 (Graviton container instances), and
# pre-pulled by the instances' user data.
FROM --platform=$BUILDPLATFORM golang:1.26-bookworm AS build
ARG TARGETOS
ARG TARGETARCH
WORKDIR /src
COPY go.mod go.sum ./
RUN GOWORK=off go mod download
COPY . .
RUN GOWORK=off CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -ldflags="-s -w" -o /out/bridge ./relay/cmd/bridge

FROM debian:bookworm-slim
# procps gives pgrep to the task definition's health check; the rest is
# what a shell session in a workspace expects. AGENT_PACKAGES adds the
# Debian packages of an agent command-line tool (AGENT_COMMAND names it).
ARG AGENT_PACKAGES=""
RUN apt-get update \
 && apt-get install -y --no-install-recommends bash ca-certificates curl git less procps vim-tiny \
    $AGENT_PACKAGES \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/bridge /usr/local/bin/bridge
# The bridge runs as root: it makes each user's folder under the shared
# access point, gives it the user's uid, and starts the agent as that uid
# with no_new_privs (R9a). ECS's init process (initProcessEnabled) is PID 1
# and reaps the agent's orphaned children.
ENTRYPOINT ["/usr/local/bin/bridge"]
