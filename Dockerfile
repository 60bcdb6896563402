# One image with both binaries: `ferry` (operator, local runner) and `transfer-agent`.
#
# Base images are pinned by exact version tag. Pin them by digest as well when you build a
# release: the digests were NOT looked up where this file was written (no registry access), and
# a made-up digest would be worse than none. To add them, run
#   docker buildx imagetools inspect docker.io/library/rust:1.95.0-bookworm
#   docker buildx imagetools inspect gcr.io/distroless/cc-debian12:nonroot
# and write the index digest after the tag, e.g. `FROM gcr.io/distroless/cc-debian12:nonroot@sha256:<digest>`
# (with both, the digest wins and the tag stays for the reader).
#
# Build stage: the toolchain the workspace is tested with (rust-version 1.94 or later), on
# Debian 12, whose glibc is the one the runtime image carries.
FROM docker.io/library/rust:1.95.0-bookworm AS build
WORKDIR /src
# .dockerignore keeps target/, .git/, .venv/, local state and secret-looking files out of the context.
COPY . .
# --locked: exactly the versions in Cargo.lock (the ones `cargo deny` and `cargo audit` checked).
RUN cargo build --release --locked -p ferry-operator -p transfer-agent

# Runtime: distroless "cc" (glibc, libgcc, CA certificates, tzdata; no shell, no package
# manager), as the numeric non-root user 65532 that the `nonroot` tag also sets.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/ferry /src/target/release/transfer-agent /usr/local/bin/
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/ferry"]
