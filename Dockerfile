# syntax=docker/dockerfile:1
# FerroLB image: ferrolb-controller, ferrolb-speaker and ferrolbctl in one image; the manifests
# pick the binary with `command:`. Build from the workspace root:
#   docker build -t ferrolb:0.1.0 .
# Without Docker, `cargo xtask image` assembles the same image with buildah from scratch (see
# docs/install.md); xtask's tests keep both in step (binaries, paths, user, entrypoint).

FROM rust:1.95-bookworm AS builder
WORKDIR /src
# The whole workspace: cargo needs every member's manifest to resolve the locked dependency
# graph, and .cargo/config.toml (the Kubernetes API version for k8s-openapi).
COPY . .
# The caches keep the registry and the build directory between builds; the binaries are copied
# out of the cached target directory in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p ferrolb-controller -p ferrolb-speaker -p ferrolb-crds \
      --bin ferrolb-controller --bin ferrolb-speaker --bin ferrolbctl \
    && install -D -m 0755 target/release/ferrolb-controller /out/ferrolb-controller \
    && install -D -m 0755 target/release/ferrolb-speaker /out/ferrolb-speaker \
    && install -D -m 0755 target/release/ferrolbctl /out/ferrolbctl

# glibc and libgcc (what Rust binaries link dynamically), no shell. Runs as nobody:nogroup
# (65534) by default, as the controller Deployment does; the speaker DaemonSet runs it as root
# with every capability dropped but NET_RAW.
FROM gcr.io/distroless/cc-debian12
COPY --from=builder /out/ferrolb-controller /out/ferrolb-speaker /out/ferrolbctl /usr/local/bin/
USER 65534:65534
ENTRYPOINT ["/usr/local/bin/ferrolb-controller"]
