# sidekiq-exporter container image.
#
#   podman build -t sidekiq-exporter .           (or docker build)
#   podman run -p 8743:8743 sidekiq-exporter --redis.url redis://redis:6379/0
#
# BASE_IMAGE is any Debian-like image with python3 (>= 3.11) and its venv module; both stages
# use it, so the venv's interpreter path is the same in each.
#
# Behind a private index, or offline, pip takes its own settings as build arguments, e.g.
#   --build-arg PIP_INDEX_URL=https://pypi.example.com/simple
# or, with wheels made beforehand (`pip wheel --wheel-dir wheels . setuptools`):
#   --build-arg PIP_NO_INDEX=1 --build-arg PIP_FIND_LINKS=/src/wheels
#
# The image is run read-only as a numeric non-root user: nothing is written at run time
# (bytecode is compiled at build time).
ARG BASE_IMAGE=docker.io/library/python:3.12-slim-bookworm

FROM ${BASE_IMAGE} AS build
# pip's settings, passed through (unset arguments stay unset).
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ARG PIP_NO_INDEX
ARG PIP_FIND_LINKS
ARG PIP_TRUSTED_HOST
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore
# Only what .dockerignore lets through: the package, its metadata and an optional wheels/.
COPY . /src
# The installer (pip, setuptools) is not needed at run time: it leaves the venv.
RUN python3 -m venv /opt/sidekiq-exporter \
    && /opt/sidekiq-exporter/bin/python -m pip install /src \
    && /opt/sidekiq-exporter/bin/python -m pip uninstall --yes setuptools pip \
    && /opt/sidekiq-exporter/bin/sidekiq-exporter --version

FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="sidekiq-exporter" \
      org.opencontainers.image.description="Prometheus exporter for Sidekiq: queue latency against SLAs, processes and per-class job timing, sampled from Redis" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.source="https://github.com/sidekiq-exporter/sidekiq-exporter" \
      org.opencontainers.image.url="https://github.com/sidekiq-exporter/sidekiq-exporter" \
      org.opencontainers.image.licenses="MIT"
COPY --from=build /opt/sidekiq-exporter /opt/sidekiq-exporter
ENV PATH=/opt/sidekiq-exporter/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
# Numeric, so Kubernetes' runAsNonRoot can verify it without an /etc/passwd entry.
USER 65532:65532
EXPOSE 8743
# Python, not curl (the image has none): 200 from /-/healthy on the port of
# SIDEKIQ_EXPORTER_WEB_LISTEN_ADDRESS (default :8743). With TLS or basic auth on the web
# config, override this check.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["/opt/sidekiq-exporter/bin/python", "-c", "import os, urllib.request; port = os.environ.get('SIDEKIQ_EXPORTER_WEB_LISTEN_ADDRESS', ':8743').rsplit(':', 1)[1]; urllib.request.urlopen(f'http://127.0.0.1:{port}/-/healthy', timeout=4)"]
ENTRYPOINT ["/opt/sidekiq-exporter/bin/sidekiq-exporter"]
