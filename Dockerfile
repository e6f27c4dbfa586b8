# mig-extender container image (README.md, "Container image"):
#   docker build -t registry.example.com/mig-extender:0.1.0 .     # or: podman build / buildah bud
#
# The base: python 3.11 on Debian bookworm, pinned by the digest of its multi-platform index (amd64 and arm64).
# To move to a newer patch release, take the tag's current digest (`skopeo inspect --raw
# docker://docker.io/library/python:<tag> | sha256sum`, or `docker buildx imagetools inspect`) and change
# both here. Both stages use the same base, so the virtualenv's interpreter link (/usr/local/bin/python3)
# resolves at run time too.
ARG PYTHON_IMAGE=docker.io/library/python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d

# Build stage: uv installs the locked runtime dependencies (uv.lock, hashes checked; no dev or sim extras) and
# the package into /opt/venv. uv, pip and the sources stay in this stage.
FROM ${PYTHON_IMAGE} AS build
# The uv that scripts/setup.sh uses (a test checks they agree).
ARG UV_VERSION=0.13.8
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_NO_CACHE=1 \
    UV_NO_PROGRESS=1 \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/opt/venv
RUN python3 -m venv /opt/uv \
 && /opt/uv/bin/pip install --quiet "uv==${UV_VERSION}"
WORKDIR /src
# The dependencies first, in a layer of their own that a source change leaves alone. --locked: a uv.lock
# that no longer matches pyproject.toml fails the build instead of being resolved again.
COPY pyproject.toml uv.lock ./
RUN /opt/uv/bin/uv sync --locked --no-install-project --no-editable --python python3
# pyproject.toml names README.md as the readme; the package is extender/ (schemas included as package data).
COPY README.md ./
COPY extender ./extender
# --no-editable: the package is installed into the venv, not linked to /src. The modules are compiled to .pyc
# here (UV_COMPILE_BYTECODE), so the read-only runtime image never needs to write them.
RUN /opt/uv/bin/uv sync --locked --no-editable --python python3 \
 && /opt/venv/bin/mig-extender --help >/dev/null

FROM ${PYTHON_IMAGE}
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
