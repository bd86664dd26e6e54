# syntax=docker/dockerfile:1.7
# The Roomcast operator (`roomcast-operator`).
#
#   docker build -f docker/operator.Dockerfile -t ghcr.io/roomcast/roomcast-operator:0.1.0 .
#   docker buildx build --platform linux/amd64,linux/arm64 -f docker/operator.Dockerfile ... (make images)
#
# Build context: the repository root. Distroless runtime, user 65532, nothing written to the
# root filesystem (the chart sets `readOnlyRootFilesystem: true`).
ARG RUST_VERSION=1.95
# The build stage runs on the builder's platform and cross-compiles for the target's
# (docker/cross.sh): a multi-arch build (`--platform linux/amd64,linux/arm64`) needs no emulation.
FROM --platform=$BUILDPLATFORM rust:${RUST_VERSION}-bookworm AS build
ARG TARGETARCH
WORKDIR /src
COPY docker/cross.sh /usr/local/bin/cross.sh
RUN cross.sh setup
COPY . .
# Cache mounts keep the registry and the target dir between builds of the same machine.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target,id=target-$TARGETARCH \
    cross.sh build roomcast-operator roomcast-operator

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/roomcast-operator /usr/local/bin/roomcast-operator
USER 65532:65532
# Metrics and health.
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/roomcast-operator"]
CMD ["run"]
