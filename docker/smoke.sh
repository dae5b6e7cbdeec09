#!/usr/bin/env bash
# `make image-smoke`: prove docker/Dockerfile builds and the fast test tier passes inside the image,
# on a machine with no Docker engine and no access to the CUDA base's registry.
#
#   1. debootstrap a minimal Debian bookworm (cached; Python comes from the Dockerfile's apt step,
#      exactly as on the CUDA base),
#   2. import it into buildah as localhost/bhasha-smoke-base:bookworm,
#   3. docker/build.sh with BUILD_ENGINE=buildah, that base as BASE_IMAGE and a CPU torch wheel,
#   4. `buildah run` the fast tier inside the built image.
# Needs root, buildah and debootstrap (Debian packages). Prints each command and the timings.
#
# Knobs (env):
#   BHASHA_SMOKE_CACHE   where the rootfs tarball is kept (default ~/.cache/bhasha-build/smoke)
#   DEBIAN_MIRROR        default http://deb.debian.org/debian
#   SMOKE_TORCH_WHEEL    a local CPU torch wheel (default: the first torch-*+cpu*.whl in pip's
#                        find-links); the CUDA torch from PyPI is ~4 GB and pointless without a GPU
#   BHASHA_BUILD_CA      CA bundle for pip inside the build (default: the one pip uses here)
#   SMOKE_PYTEST_ARGS    what pytest runs inside the image (default: the fast tier)
#   SMOKE_IMAGE          tag of the built image (default localhost/bhasha-build:smoke; kept)
set -euo pipefail

cd "$(dirname "$0")/.."

run() {
  printf '+' >&2; printf ' %q' "$@" >&2; printf '\n' >&2
  "$@"
}

t0=$(date +%s)
SUITE=bookworm
CACHE="${BHASHA_SMOKE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/bhasha-build/smoke}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
BASE_TAR="${CACHE}/debian-${SUITE}-minbase.tar"
BASE_REF="localhost/bhasha-smoke-base:${SUITE}"
IMAGE="${SMOKE_IMAGE:-localhost/bhasha-build:smoke}"

for tool in buildah debootstrap; do
  command -v "${tool}" >/dev/null || { echo "smoke.sh: needs ${tool} (apt-get install ${tool})" >&2; exit 2; }
done
[ "$(id -u)" -eq 0 ] || { echo "smoke.sh: debootstrap and chroot builds need root" >&2; exit 2; }

# --- 1. base rootfs (cached) -----------------------------------------------------------------
t_boot=0
if [ ! -s "${BASE_TAR}" ]; then
  s=$(date +%s)
  run mkdir -p "${CACHE}"
  rootfs="$(mktemp -d "${CACHE}/rootfs.XXXXXX")"
  run debootstrap --variant=minbase "${SUITE}" "${rootfs}" "${MIRROR}"
  # Drop apt lists and caches so the base is small and holds no stale index.
  run rm -rf "${rootfs}/var/lib/apt/lists/"* "${rootfs}/var/cache/apt/"*.bin
  run tar -C "${rootfs}" --numeric-owner -cf "${BASE_TAR}.tmp" .
  run mv "${BASE_TAR}.tmp" "${BASE_TAR}"
  run rm -rf "${rootfs}"
  t_boot=$(( $(date +%s) - s ))
fi

# --- 2. import into buildah (only when the tarball changed) ------------------------------------
s=$(date +%s)
tar_sum="$(sha256sum "${BASE_TAR}" | cut -d' ' -f1)"
have_sum="$(buildah inspect --type image --format '{{index .ImageAnnotations "org.bhasha.rootfs.sha256"}}' \
  "${BASE_REF}" 2>/dev/null || true)"
if [ "${have_sum}" != "${tar_sum}" ]; then
  ctr="$(run buildah from scratch)"
  run buildah add "${ctr}" "${BASE_TAR}" /
  run buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --cmd /bin/bash --annotation "org.bhasha.rootfs.sha256=${tar_sum}" "${ctr}"
  run buildah commit --rm "${ctr}" "${BASE_REF}"
fi
BASE_DIGEST="$(buildah inspect --type image --format '{{.FromImageDigest}}' "${BASE_REF}")"
t_import=$(( $(date +%s) - s ))

# --- 3. build ------------------------------------------------------------------------------
if [ -z "${SMOKE_TORCH_WHEEL:-}" ]; then
  links="${PIP_FIND_LINKS:-$(python3 -m pip config get global.find-links 2>/dev/null || true)}"
  for dir in ${links}; do
    for whl in "${dir#file://}"/torch-*+cpu-*.whl; do
      [ -f "${whl}" ] && { SMOKE_TORCH_WHEEL="${whl}"; break 2; }
    done
  done
fi
if [ -z "${SMOKE_TORCH_WHEEL:-}" ] || [ ! -f "${SMOKE_TORCH_WHEEL}" ]; then
  echo "smoke.sh: set SMOKE_TORCH_WHEEL to a local CPU torch wheel (matching requirements/torch.txt)" >&2
  exit 2
fi
if [ -z "${BHASHA_BUILD_CA:-}" ]; then
  for ca in "${PIP_CERT:-}" "$(python3 -m pip config get global.cert 2>/dev/null || true)" \
            "${SSL_CERT_FILE:-}" /etc/ssl/certs/ca-certificates.crt; do
    [ -n "${ca}" ] && [ -r "${ca}" ] && { BHASHA_BUILD_CA="${ca}"; break; }
  done
fi

wheel_dir="$(dirname "${SMOKE_TORCH_WHEEL}")"
s=$(date +%s)
# The wheel's folder is bind-mounted into every RUN step (not copied into a layer).
run env BUILD_ENGINE=buildah IMAGE="${IMAGE}" BASE_IMAGE="${BASE_REF}" BASE_DIGEST="${BASE_DIGEST}" \
  TORCH_SPEC="/wheels/$(basename "${SMOKE_TORCH_WHEEL}")" BHASHA_BUILD_CA="${BHASHA_BUILD_CA:-}" \
  bash docker/build.sh --volume "${wheel_dir}:/wheels:ro"
t_build=$(( $(date +%s) - s ))

# --- 4. fast tier inside the image -----------------------------------------------------------
s=$(date +%s)
if [ -n "${SMOKE_PYTEST_ARGS:-}" ]; then
  read -r -a pytest_args <<< "${SMOKE_PYTEST_ARGS}"
else
  # The linters' tests check this repo's files from outside (their binaries are not in the image).
  pytest_args=(-m "not slow and not gpu and not container" -p no:cacheprovider
               --ignore=tests/test_container.py --ignore=tests/test_workflows.py tests)
fi
ctr="$(run buildah from "${IMAGE}")"
trap 'buildah rm "${ctr}" >/dev/null 2>&1 || true' EXIT
run buildah run --isolation chroot --env HOME=/home/bhasha "${ctr}" -- \
  sh -c 'id && cat /etc/bhasha-build/image.json && python --version'
# ./data is mounted read-only, as compose mounts it: the image itself carries no data.
run buildah run --isolation chroot --env HOME=/home/bhasha --volume "${PWD}/data:/app/data:ro" "${ctr}" -- \
  python -m pytest "${pytest_args[@]}"
t_tests=$(( $(date +%s) - s ))

echo "smoke: debootstrap ${t_boot}s (0 = cached), import ${t_import}s, build ${t_build}s, tests ${t_tests}s," \
  "total $(( $(date +%s) - t0 ))s"
