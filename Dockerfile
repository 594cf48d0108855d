# syntax=docker/dockerfile:1
# The wi-webhook image: `docker build -t REGISTRY/wi-webhook:TAG .` from the repository root.
#
# Builder: the Rust release the workspace is built and tested with (Cargo.toml
# `rust-version`), on Debian 12. Runtime: distroless cc-debian12, non-root (UID 65532), no
# shell, no package manager. The binary links glibc dynamically (the gnu target; TLS is
# rustls with ring, no OpenSSL), so the runtime is the `cc` variant, which ships the same
# Debian 12 glibc and libgcc_s the builder linked against; the `static` variant has no libc.
# A musl build would fit `static`, but musl's allocator is markedly slower for a server of
# many small allocations like this one, for a few MiB of image saved.
# webhook/tests/dockerfile.rs keeps this file honest: every COPY source exists, every
# workspace member is copied, the binary name and the Rust version match the workspace,
# --locked, USER 65532.

FROM rust:1.95-bookworm AS builder
WORKDIR /src
# The whole workspace (every member's manifest must be there for cargo to load it), nothing
# else: .dockerignore keeps target/, .cluster/ and .git/ out of the context.
COPY Cargo.toml Cargo.lock ./
COPY certs ./certs
COPY webhook ./webhook
COPY tests ./tests
COPY bench ./bench
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p wi-webhook \
    && install -D -m 0755 target/release/wi-webhook /out/wi-webhook

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /out/wi-webhook /usr/local/bin/wi-webhook
USER 65532:65532
# Admission (TLS) and the plain /metrics, /healthz, /readyz port.
EXPOSE 9443 8095
ENTRYPOINT ["/usr/local/bin/wi-webhook"]
CMD ["serve"]
