# syntax=docker/dockerfile:1.7
# The Roomcast data plane (`roomcast-dataplane`): one hub node.
#
#   docker build -f docker/dataplane.Dockerfile -t ghcr.io/roomcast/roomcast-dataplane:0.1.0 .
#   docker buildx build --platform linux/amd64,linux/arm64 -f docker/dataplane.Dockerfile ... (make images)
#
# Build context: the repository root. The runtime image is distroless (glibc, CA
# certificates, no shell), runs as the unprivileged user 65532 and writes nothing to its root
# filesystem, so it works with `readOnlyRootFilesystem: true`.
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
    cross.sh build roomcast-dataplane roomcast-dataplane

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/roomcast-dataplane /usr/local/bin/roomcast-dataplane
USER 65532:65532
# Socket.IO clients, the management API, the peer links, metrics and probes (when
# metrics.listen is set: the operator sets 0.0.0.0:9090).
EXPOSE 3000 3001 7000 9090
ENTRYPOINT ["/usr/local/bin/roomcast-dataplane"]
