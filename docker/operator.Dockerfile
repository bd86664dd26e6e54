# syntax=docker/dockerfile:1.7
# The Roomcast operator (`roomcast-operator`).
#
#   docker build -f docker/operator.Dockerfile -t roomcast/roomcast-operator:0.1.0 .
#
# Build context: the repository root. Distroless runtime, user 65532, nothing written to the
# root filesystem (the chart sets `readOnlyRootFilesystem: true`).
ARG RUST_VERSION=1.95
FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p roomcast-operator --bin roomcast-operator \
 && install -D target/release/roomcast-operator /out/roomcast-operator

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/roomcast-operator /usr/local/bin/roomcast-operator
USER 65532:65532
# Metrics and health.
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/roomcast-operator"]
CMD ["run"]
