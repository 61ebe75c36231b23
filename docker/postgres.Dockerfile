# syntax=docker/dockerfile:1.7
# Précis PostgreSQL image: Debian bookworm's postgresql-15, for the local cluster and CI (the job
# store; production points PRECIS_DATABASE_URL at a managed PostgreSQL).
# Build from the repo root:  docker build -f docker/postgres.Dockerfile -t precis/postgres:0.1.0 .
#
# Runtime contract (env, defaults, writable dirs): docker/postgres/entrypoint.sh. Port 5432;
# uid/gid 10004; scram-sha-256 for TCP clients; writable /var/lib/postgresql (data volume) and
# /tmp; `pg_isready` on PATH for probes (e.g. `pg_isready -h 127.0.0.1 -p 5432`).
ARG BASE_IMAGE=python:3.11-slim-bookworm@sha256:2e32f7d302adc1c37428355c1e646897c0c53f4fd60b6a551245fb90ee129f91

FROM ${BASE_IMAGE}
ARG APP_VERSION=0.1.0
LABEL org.opencontainers.image.title="precis-postgres" \
      org.opencontainers.image.description="PostgreSQL 15 (Debian bookworm) for Précis dev/CI" \
      org.opencontainers.image.version="${APP_VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# The user exists before the package, so the package's own postinst reuses it (uid 10004, not a
# random system uid). create_main_cluster=false: Debian would otherwise initdb a cluster under
# /var/lib/postgresql/15/main at install time; the entrypoint initdbs PGDATA on first start.
# Versions are not pinned: bookworm(-security) carries one version of each package and old ones
# disappear from the mirror (hadolint DL3008). tini (PID 1) forwards SIGTERM (smart shutdown).
# hadolint ignore=DL3008
RUN groupadd --system --gid 10004 postgres \
 && useradd --system --uid 10004 --gid 10004 --home-dir /var/lib/postgresql --no-create-home --shell /bin/bash postgres \
 && mkdir -p /etc/postgresql-common/createcluster.d \
 && echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.d/precis.conf \
 && apt-get update \
 && apt-get install -y --no-install-recommends postgresql-15 tini \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /var/lib/postgresql/data \
 && chown -R 10004:10004 /var/lib/postgresql \
 && chmod 0700 /var/lib/postgresql/data
COPY --chown=root:root --chmod=0755 docker/postgres/entrypoint.sh /usr/local/bin/postgres-entrypoint
# PGHOST: psql / pg_isready inside the container use the server's socket in /tmp by default.
ENV PATH=/usr/lib/postgresql/15/bin:$PATH \
    PGDATA=/var/lib/postgresql/data \
    PGHOST=/tmp \
    HOME=/tmp
USER 10004:10004
VOLUME ["/var/lib/postgresql"]
EXPOSE 5432
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/postgres-entrypoint"]
