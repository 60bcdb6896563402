# One image with both binaries: `ferry` (operator, local runner) and `transfer-agent`.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p ferry-operator -p transfer-agent

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/ferry /src/target/release/transfer-agent /usr/local/bin/
USER 65532:65532
ENTRYPOINT ["ferry"]
