# The relay's image (RelayStack), built by `cdk deploy` from the repository
# root as the build context, for linux/arm64 (Fargate on Graviton).
# The web page's vendored scripts (relay/web/static/vendor) come from
# `make web`, which `make synth` runs first. The task definition sets
# AISHELL_MODE=aws, which runs the relay alone (relay/awsmode).
FROM --platform=$BUILDPLATFORM golang:1.26-bookworm AS build
ARG TARGETOS
ARG TARGETARCH
WORKDIR /src
COPY go.mod go.sum ./
RUN GOWORK=off go mod download
COPY . .
RUN GOWORK=off CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -ldflags="-s -w" -o /out/relay ./relay/cmd/relay

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/relay /relay
EXPOSE 8080
USER nonroot
ENTRYPOINT ["/relay"]
