# syntax=docker/dockerfile:1.7
# Précis dev SMTP sink image: scripts/smtp_sink.py (aiosmtpd, the same sink `make run` uses) with
# its HTTP listing turned on, so a cluster test can count the mails the notifier sent.
# Never deployed to production (the chart points the notifier at a real relay there).
# Build from the repo root:  docker build -f docker/smtp-sink.Dockerfile -t precis/smtp-sink:0.1.0 .
#
# Contract: SMTP on 1025, HTTP on 8025 (GET /healthz, GET /api/mails, DELETE /api/mails), both on
# all interfaces; mails as .eml files under $PRECIS_VAR_DIR/mail (/tmp/smtp-sink/mail: mount
# /tmp writable); uid/gid 10005; works with readOnlyRootFilesystem.
ARG BASE_IMAGE=python:3.11-slim-bookworm@sha256:2e32f7d302adc1c37428355c1e646897c0c53f4fd60b6a551245fb90ee129f91

# Build-time pip settings (CA bundle, index mirror): `--build-context pip-config=DIR` with a
# pip.conf, mounted at /etc/xdg/pip for the pip step only. Empty by default.
FROM scratch AS pip-config

FROM ${BASE_IMAGE} AS builder
ARG AIOSMTPD_VERSION=1.4.6
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python3 -m venv /opt/venv
RUN --mount=type=cache,target=/root/.cache/pip,id=precis-pip,sharing=locked \
    --mount=type=bind,from=pip-config,target=/etc/xdg/pip \
    /opt/venv/bin/pip install "aiosmtpd==${AIOSMTPD_VERSION}"

FROM ${BASE_IMAGE}
ARG APP_VERSION=0.1.0
LABEL org.opencontainers.image.title="precis-smtp-sink" \
      org.opencontainers.image.description="Précis development SMTP sink with an HTTP mail listing" \
      org.opencontainers.image.version="${APP_VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10005 precis \
 && useradd --system --uid 10005 --gid 10005 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin precis
COPY --from=builder /opt/venv /opt/venv
COPY --chown=root:root scripts/smtp_sink.py /opt/precis/smtp_sink.py
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    PRECIS_VAR_DIR=/tmp/smtp-sink \
    PRECIS_SMTP_SINK_HOST=0.0.0.0 \
    PRECIS_SMTP_PORT=1025 \
    PRECIS_SMTP_SINK_HTTP_PORT=8025
USER 10005:10005
EXPOSE 1025 8025
ENTRYPOINT ["python", "/opt/precis/smtp_sink.py"]
