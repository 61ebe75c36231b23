# syntax=docker/dockerfile:1.7
# Précis Redis image: Debian bookworm's redis-server, the gateway's rate-limit store for the
# chart's bundled mode (rateLimits.store=bundled), the local cluster and CI. The counters are
# one-minute windows: nothing is persisted (no RDB snapshot, no AOF), a restart starts them over.
# Build from the repo root:  docker build -f docker/redis.Dockerfile -t precis/redis:0.1.0 .
#
# Runtime contract: port 6379 on all interfaces, no password (the chart's NetworkPolicy admits
# only the gateway), protected mode off for that reason; uid/gid 10006; the only writable
# directory is /data (empty: nothing is saved); works with readOnlyRootFilesystem; `redis-cli`
# on PATH for probes (`redis-cli -p 6379 ping`). Arguments replace the default CMD's options.
ARG BASE_IMAGE=python:3.11-slim-bookworm@sha256:2e32f7d302adc1c37428355c1e646897c0c53f4fd60b6a551245fb90ee129f91

FROM ${BASE_IMAGE}
ARG APP_VERSION=0.1.0
LABEL org.opencontainers.image.title="precis-redis" \
      org.opencontainers.image.description="Redis (Debian bookworm) for the Précis gateway's rate limits" \
      org.opencontainers.image.version="${APP_VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# The user exists before the package, so the package's postinst reuses it (uid 10006, not a
# random system uid). Versions are not pinned: bookworm(-security) carries one version of each
# package and old ones disappear from the mirror (hadolint DL3008). tini (PID 1) forwards SIGTERM.
# hadolint ignore=DL3008
RUN groupadd --system --gid 10006 redis \
 && useradd --system --uid 10006 --gid 10006 --home-dir /data --no-create-home --shell /usr/sbin/nologin redis \
 && apt-get update \
 && apt-get install -y --no-install-recommends redis-server tini \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /data \
 && chown 10006:10006 /data
ENV HOME=/data
USER 10006:10006
WORKDIR /data
EXPOSE 6379
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/bin/redis-server"]
CMD ["--bind", "0.0.0.0", "--port", "6379", "--protected-mode", "no", "--save", "", "--appendonly", "no", "--dir", "/data"]
