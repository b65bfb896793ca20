# syntax=docker/dockerfile:1
# Quarry's image: one binary, `quarry`, for every role (`quarry serve --role …`,
# see k8s/). Build from the repository root:
#
#   docker build -t quarry:0.1.0 .
#
# The runtime image holds only the binary and what it needs at run time
# (glibc, libgcc, CA certificates for HTTPS to model APIs and JWKS). The
# configuration (quarry.toml, golden pairs, summary kinds) and the MiniLM
# embedding model come from volumes: k8s/ mounts them at /etc/quarry and
# /models (QUARRY_MODEL_DIR).

# The workspace needs rust-version 1.88 (edition 2024, let chains); this is
# the toolchain the project is built and tested with.
ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS builder
WORKDIR /src
COPY . .
# Release build of the `quarry` binary (crate `quarry`, cli/) without the
# `dev-tools` feature: no eval, bench or scripted model in production.
# Protos compile with protox (no protoc); C/C++ parts (aws-lc, esaxx) use the
# image's gcc/g++.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p quarry \
    && install -D -m 0755 target/release/quarry /out/quarry

# distroless cc: glibc, libgcc, libstdc++, CA certificates, tzdata; no shell,
# no package manager. The `nonroot` tag runs as uid/gid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /out/quarry /usr/local/bin/quarry
USER 65532:65532
# gRPC (server.listen must be 0.0.0.0:50051 in the mounted config).
EXPOSE 50051
ENV QUARRY_CONFIG=/etc/quarry/quarry.toml \
    QUARRY_MODEL_DIR=/models
ENTRYPOINT ["/usr/local/bin/quarry"]
CMD ["serve"]
