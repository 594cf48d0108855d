# syntax=docker/dockerfile:1
# The wi-webhook image, for linux/amd64 and linux/arm64, from the repository root:
#   docker buildx build --platform linux/amd64,linux/arm64 \
#     --build-arg WI_GIT_COMMIT=$(git rev-parse --short HEAD) \
#     --build-arg WI_CREATED=$(date -u +%Y-%m-%dT%H:%M:%SZ) \
#     -t REGISTRY/wi-webhook:TAG --push .
#
# Builder: the Rust release the workspace is built and tested with (Cargo.toml
# `rust-version`), on Debian 12, always on the build machine's own platform
# ($BUILDPLATFORM): it cross-compiles for the target platform with Debian's cross gcc as
# linker and C compiler (ring and mimalloc have C parts), instead of emulating the target.
# Runtime: distroless cc-debian12, non-root (UID 65532), no shell, no package manager. The
# binary links glibc dynamically (the gnu target; TLS is rustls with ring, no OpenSSL), so
# the runtime is the `cc` variant, which ships the same Debian 12 glibc and libgcc_s the
# builder's cross toolchain links against; the `static` variant has no libc. A musl build
# would fit `static`, but musl's allocator is markedly slower for a server of many small
# allocations like this one, for a few MiB of image saved.
# Both base images are pinned by the digest of their multi-platform index, so a rebuild
# uses the same bytes; update them together with the tag.
# webhook/tests/dockerfile.rs keeps this file honest: every COPY source exists, every
# workspace member is copied, the binary name and the Rust version match the workspace,
# --locked, both platforms' targets, pinned digests, OCI labels, USER 65532.

FROM --platform=$BUILDPLATFORM rust:1.95-bookworm@sha256:6258907abe69656e41cd992e0b705cdcfabcbbe3db374f92ed2d47121282d4a1 AS builder
ARG TARGETARCH
ARG BUILDARCH
# The commit `wi-webhook --version` names (.git is not in the build context).
ARG WI_GIT_COMMIT=unknown
WORKDIR /src
# The Rust target of each supported platform, and its C compiler and linker: the image's
# own gcc when building for the build machine's platform, else Debian's cross gcc.
RUN case "$TARGETARCH" in \
      amd64) rust_target=x86_64-unknown-linux-gnu; gnu=x86_64-linux-gnu; package=gcc-x86-64-linux-gnu ;; \
      arm64) rust_target=aarch64-unknown-linux-gnu; gnu=aarch64-linux-gnu; package=gcc-aarch64-linux-gnu ;; \
      *) echo "unsupported platform: $TARGETARCH (linux/amd64 and linux/arm64 are)" >&2; exit 1 ;; \
    esac \
    && if [ "$TARGETARCH" = "$BUILDARCH" ]; then cc=gcc; else \
         cc="$gnu-gcc" \
         && apt-get update \
         && apt-get install -y --no-install-recommends "$package" "libc6-dev-$TARGETARCH-cross" \
         && rm -rf /var/lib/apt/lists/*; \
       fi \
    && rustup target add "$rust_target" \
    && echo "$rust_target $cc" > /tmp/target
# The whole workspace (every member's manifest must be there for cargo to load it), nothing
# else: .dockerignore keeps target/, .cluster/ and .git/ out of the context.
COPY Cargo.toml Cargo.lock ./
COPY certs ./certs
COPY webhook ./webhook
COPY tests ./tests
COPY bench ./bench
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target,id=wi-webhook-target-$TARGETARCH \
    read -r rust_target cc < /tmp/target \
    && export "CARGO_TARGET_$(echo "$rust_target" | tr 'a-z-' 'A-Z_')_LINKER=$cc" \
       "CC_$(echo "$rust_target" | tr '-' '_')=$cc" \
       "WI_GIT_COMMIT=$WI_GIT_COMMIT" \
    && cargo build --release --locked -p wi-webhook --target "$rust_target" \
    && install -D -m 0755 "target/$rust_target/release/wi-webhook" /out/wi-webhook

FROM gcr.io/distroless/cc-debian12:nonroot@sha256:9dac0a79194e45a7da0158a9c6da57b217585af0786db3845d1f0ec1a0dd182f
ARG WI_GIT_COMMIT=unknown
ARG WI_CREATED=unknown
# The workspace version (Cargo.toml); the test keeps them equal.
ARG WI_VERSION=0.1.0
LABEL org.opencontainers.image.title="wi-webhook" \
      org.opencontainers.image.description="Azure Workload Identity mutating admission webhook with agent-pool isolation" \
      org.opencontainers.image.version="$WI_VERSION" \
      org.opencontainers.image.revision="$WI_GIT_COMMIT" \
      org.opencontainers.image.created="$WI_CREATED" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="gcr.io/distroless/cc-debian12:nonroot"
COPY --from=builder /out/wi-webhook /usr/local/bin/wi-webhook
USER 65532:65532
# Admission (TLS) and the plain /metrics, /healthz, /readyz port.
EXPOSE 9443 8095
ENTRYPOINT ["/usr/local/bin/wi-webhook"]
CMD ["serve"]
