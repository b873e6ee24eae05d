# syntax=docker/dockerfile:1
# kite: build the release binary, then ship it alone on a slim Debian.
#   docker build -t kite .
#   docker run --rm -p 7700:7700 -e KITE_DATABASE_URL=... -e KITE_AMQP_URL=... kite

# kite needs Rust 1.92 or newer (rust-version in Cargo.toml).
FROM rust:1-bookworm AS builder
WORKDIR /src
# `kite --version` names this revision; .git is not in the build context (.dockerignore):
#   docker build --build-arg KITE_GIT_REV=$(git rev-parse --short HEAD) -t kite .
ARG KITE_GIT_REV=""
ENV KITE_GIT_REV=${KITE_GIT_REV}
COPY . .
# Migrations are embedded at compile time (refinery), so the binary is all the runtime needs.
# The cache mounts keep the registry and target/ between builds; the binary is copied
# out of target/ in the same step because a cache mount is not part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin kite \
    && install -m 0755 target/release/kite /usr/local/bin/kite

FROM debian:bookworm-slim
# ca-certificates is left unpinned on purpose: it should track Debian's security updates.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 kite \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin kite
COPY --from=builder /usr/local/bin/kite /usr/local/bin/kite
USER 10001:10001
# In a container kite must listen on all interfaces (its own default is 127.0.0.1).
ENV KITE_HOST=0.0.0.0 \
    KITE_PORT=7700
EXPOSE 7700
ENTRYPOINT ["kite"]
CMD ["serve"]
