# syntax=docker/dockerfile:1
# FerroLB image: ferrolb-controller and ferrolb-speaker in one image; the manifests pick the
# binary with `command:`. Build from the workspace root:
#   docker build -t ferrolb:0.1.0 .
# See docs/install.md.

FROM rust:1.95-bookworm AS builder
WORKDIR /src
# The whole workspace: cargo needs every member's manifest to resolve the locked dependency
# graph, and .cargo/config.toml (the Kubernetes API version for k8s-openapi).
COPY . .
# The caches keep the registry and the build directory between builds; the binaries are copied
# out of the cached target directory in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p ferrolb-controller -p ferrolb-speaker \
    && install -D -m 0755 target/release/ferrolb-controller /out/ferrolb-controller \
    && install -D -m 0755 target/release/ferrolb-speaker /out/ferrolb-speaker

# glibc and libgcc (what Rust binaries link dynamically), CA certificates, no shell. Runs as
# "nonroot" (65532) by default; the manifests set the user per component (the controller 65534,
# the speaker root with only NET_RAW and NET_BIND_SERVICE).
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /out/ferrolb-controller /out/ferrolb-speaker /usr/local/bin/
USER nonroot
ENTRYPOINT ["/usr/local/bin/ferrolb-controller"]
