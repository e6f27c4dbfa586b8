# mig-extender container image.
#   docker build -t mig-extender:0.1.0 .
# Build stage: install the package and its dependencies into a virtualenv; the runtime stage copies only
# that virtualenv (no pip caches, no sources, no build tools). Same base in both stages, so the venv's
# interpreter path (/usr/local/bin/python3.11) exists at run time. Pin the base by digest for reproducible
# builds (python:3.11-slim@sha256:...).
FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# pyproject.toml names README.md as the readme; the package is extender/ (schemas included as package data).
COPY pyproject.toml README.md ./
COPY extender ./extender
# pip compiles the installed modules to .pyc here, so the read-only runtime image never needs to write them.
RUN pip install --no-cache-dir . \
 && mig-extender --help >/dev/null

FROM python:3.11-slim
LABEL org.opencontainers.image.title="mig-extender" \
      org.opencontainers.image.description="kube-scheduler extender that places pods by free NVIDIA MIG slice topology" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH
COPY --from=build /opt/venv /opt/venv
# Non-root, numeric so that Kubernetes runAsNonRoot can verify it without a passwd entry (65532 is the
# conventional "nonroot" id of distroless images). The process writes no files: a read-only root is fine.
USER 65532:65532
WORKDIR /tmp
EXPOSE 8888
ENTRYPOINT ["mig-extender"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8888"]
