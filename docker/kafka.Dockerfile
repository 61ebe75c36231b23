# syntax=docker/dockerfile:1.7
# Précis Kafka image: Apache Kafka 4.1.1 (KRaft, one combined broker+controller node) on Debian's
# OpenJDK 17 JRE. For the local cluster and CI; production uses Strimzi or a managed Kafka
# (deploy/helm values: kafka.mode).
#
# The broker is the set of jars Maven Central serves for org.apache.kafka:kafka_2.13 (+ the SLF4J
# -> Log4j 2 binding), resolved by scripts/kafka/pom.xml, exactly what `make run` uses (this
# machine reaches Maven Central, not the Apache download mirrors). They come in as the build
# context `kafka-libs` (a directory of jars); from the repo root:
#   scripts/fetch_kafka.sh    # -> $PRECIS_CACHE/kafka-4.1.1/libs
#   docker build -f docker/kafka.Dockerfile \
#     --build-context kafka-libs=$HOME/.cache/precis/kafka-4.1.1/libs -t precis/kafka:0.1.0 .
# (`make images` does this with buildah.) Without it the build stops with a message.
#
# Runtime contract (env, defaults): see docker/kafka/entrypoint.sh. Ports 9092 (PLAINTEXT, all
# interfaces) and 9093 (CONTROLLER). Data in /var/lib/kafka (mount a writable volume); writable
# /tmp. uid/gid 10003. Works with readOnlyRootFilesystem.
ARG BASE_IMAGE=python:3.11-slim-bookworm@sha256:2e32f7d302adc1c37428355c1e646897c0c53f4fd60b6a551245fb90ee129f91

# Replaced by `--build-context kafka-libs=DIR` (see above); empty otherwise.
FROM scratch AS kafka-libs

FROM ${BASE_IMAGE}
ARG APP_VERSION=0.1.0
ARG KAFKA_VERSION=4.1.1
LABEL org.opencontainers.image.title="precis-kafka" \
      org.opencontainers.image.description="Apache Kafka ${KAFKA_VERSION}, single KRaft node (broker + controller)" \
      org.opencontainers.image.version="${APP_VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# The JRE's postinst needs /usr/share/man/man1 even when dpkg excludes man pages (slim bases).
# Versions are not pinned: bookworm(-security) carries one version of each package and old ones
# disappear from the mirror, so a pin would only break the build later (hadolint DL3008).
# tini (PID 1) forwards SIGTERM to the JVM, which then shuts the broker down cleanly.
# hadolint ignore=DL3008
RUN mkdir -p /usr/share/man/man1 \
 && apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jre-headless tini \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10003 kafka \
 && useradd --system --uid 10003 --gid 10003 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin kafka \
 && mkdir -p /var/lib/kafka \
 && chown 10003:10003 /var/lib/kafka
COPY --from=kafka-libs --chown=root:root / /opt/kafka/libs/
COPY --chown=root:root scripts/kafka/log4j2.properties /opt/kafka/config/log4j2.properties
COPY --chown=root:root --chmod=0755 docker/kafka/entrypoint.sh /usr/local/bin/kafka-entrypoint
RUN test -f "/opt/kafka/libs/kafka_2.13-${KAFKA_VERSION}.jar" \
 || { echo "no kafka_2.13-${KAFKA_VERSION}.jar: build with --build-context kafka-libs=<dir of the broker jars> (docker/kafka.Dockerfile header)" >&2; exit 1; }
ENV KAFKA_DATA_DIR=/var/lib/kafka \
    KAFKA_HEAP_OPTS=-Xmx512m \
    HOME=/tmp
USER 10003:10003
VOLUME ["/var/lib/kafka"]
EXPOSE 9092 9093
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/kafka-entrypoint"]
