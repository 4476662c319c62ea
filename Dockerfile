# The dunnage image, built where a registry is reachable:
#   docker build -t dunnage .
# Without a registry, scripts/build-image builds the same layout from a local binary.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked && strip target/release/dunnage

# bookworm-slim brings a shell (dash) and coreutils for the reference's recipes. No
# /archive: local storage is on only when something is mounted there.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /backup /var/lib/dunnage /etc/dockervolumebackup \
 && chmod 1777 /var/lib/dunnage /run/lock \
 && useradd --uid 1000 --no-create-home --shell /usr/sbin/nologin dunnage
COPY --from=build /src/target/release/dunnage /usr/local/bin/dunnage
# `backup` runs one backup, as in docker-volume-backup's image.
RUN ln -s dunnage /usr/local/bin/backup
# Root by default (reading volumes and the Docker socket usually needs it); runs as
# `--user 1000` too when the volumes allow.
# Healthy while the scheduler's API (DUNNAGE_API_LISTEN) answers; always healthy without one.
HEALTHCHECK --interval=30s --timeout=10s --start-period=10s CMD ["/usr/local/bin/dunnage", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/dunnage"]
