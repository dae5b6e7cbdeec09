#!/usr/bin/env bash
# `make image`: build docker/Dockerfile with provenance build args and print every command run.
#
# Engine: docker (BuildKit) when a Docker engine answers, else buildah; force with BUILD_ENGINE.
# Knobs (env):
#   IMAGE              tag to build (default bhasha-build:local, what docker/compose.yaml runs)
#   BASE_IMAGE         override the Dockerfile's pinned CUDA base (name[:tag][@sha256:...])
#   BASE_DIGEST        digest of BASE_IMAGE when the ref does not carry one (recorded, not enforced)
#   TORCH_SPEC         torch requirement or wheel path (default: requirements/torch.txt from PyPI)
#   TORCH_INDEX_URL    index for torch only (e.g. a CUDA-specific wheel index)
#   BHASHA_BUILD_CA    CA bundle for pip behind a TLS-inspecting proxy; passed as build secret `ca`,
#                      never stored in the image
#   SOURCE_DATE_EPOCH  default: the last commit's time, so rebuilds of a commit get the same dates
#   BUILDAH_ISOLATION  buildah only (default chroot: works without a daemon or user namespaces)
#   BUILD_DRY_RUN=1    print the build command and stop (tests use it)
# Extra arguments are passed to the engine unchanged (docker/smoke.sh adds a wheel volume).
set -euo pipefail

cd "$(dirname "$0")/.."

run() {
  # Print the exact command (shell-quoted) before running it.
  printf '+' >&2; printf ' %q' "$@" >&2; printf '\n' >&2
  if [ -n "${BUILD_DRY_RUN:-}" ]; then exit 0; fi
  "$@"
}

IMAGE="${IMAGE:-bhasha-build:local}"
VERSION="$(sed -n 's/^version = "\(.*\)"$/\1/p' pyproject.toml | head -n 1)"
VERSION="${VERSION:-0.0.0}"

if GIT_SHA="$(git rev-parse HEAD 2>/dev/null)"; then
  # A build from uncommitted files must not claim to be that commit.
  if [ -n "$(git status --porcelain 2>/dev/null)" ]; then GIT_SHA="${GIT_SHA}-dirty"; fi
  : "${SOURCE_DATE_EPOCH:=$(git log -1 --format=%ct)}"
else
  GIT_SHA="unknown"
  echo "build.sh: no git commit found; GIT_SHA=unknown" >&2
fi
: "${SOURCE_DATE_EPOCH:=0}"
export SOURCE_DATE_EPOCH
CREATED="$(date -u -d "@${SOURCE_DATE_EPOCH}" +%Y-%m-%dT%H:%M:%SZ)"

if [ ! -f requirements/lock.txt ] && [ -z "${BUILD_DRY_RUN:-}" ]; then
  echo "build.sh: requirements/lock.txt is missing (the image installs the same lock as CI)" >&2
  exit 2
fi

args=(
  --file docker/Dockerfile
  --tag "${IMAGE}"
  --build-arg "VERSION=${VERSION}"
  --build-arg "GIT_SHA=${GIT_SHA}"
  --build-arg "CREATED=${CREATED}"
  --build-arg "SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH}"
  --build-arg "UID=${BHASHA_UID:-1000}"
)
[ -n "${BASE_IMAGE:-}" ] && args+=(--build-arg "BASE_IMAGE=${BASE_IMAGE}")
[ -n "${BASE_DIGEST:-}" ] && args+=(--build-arg "BASE_DIGEST=${BASE_DIGEST}")
[ -n "${TORCH_SPEC:-}" ] && args+=(--build-arg "TORCH_SPEC=${TORCH_SPEC}")
[ -n "${TORCH_INDEX_URL:-}" ] && args+=(--build-arg "TORCH_INDEX_URL=${TORCH_INDEX_URL}")
if [ -n "${BHASHA_BUILD_CA:-}" ]; then
  [ -r "${BHASHA_BUILD_CA}" ] || { echo "build.sh: BHASHA_BUILD_CA=${BHASHA_BUILD_CA} is not readable" >&2; exit 2; }
  args+=(--secret "id=ca,src=${BHASHA_BUILD_CA}")
fi

engine="${BUILD_ENGINE:-}"
if [ -z "${engine}" ]; then
  if command -v docker >/dev/null 2>&1 && timeout 20 docker info >/dev/null 2>&1; then
    engine=docker
  elif command -v buildah >/dev/null 2>&1; then
    engine=buildah
  else
    echo "build.sh: neither a Docker engine nor buildah is available" >&2
    exit 2
  fi
fi

start=$(date +%s)
case "${engine}" in
  docker)
    # BuildKit reads SOURCE_DATE_EPOCH (a build arg) for the image's created time.
    DOCKER_BUILDKIT=1 run docker build "${args[@]}" "$@" .
    image_id="$(docker image inspect --format '{{.Id}}' "${IMAGE}")"
    ;;
  buildah)
    # --timestamp pins the config's created time and every file's mtime: same inputs, same digest.
    # --format docker: the OCI format drops SHELL (pipefail) and HEALTHCHECK.
    run buildah bud --isolation "${BUILDAH_ISOLATION:-chroot}" --format docker --layers \
      --timestamp "${SOURCE_DATE_EPOCH}" "${args[@]}" "$@" .
    image_id="sha256:$(buildah inspect --type image --format '{{.FromImageID}}' "${IMAGE}")"
    ;;
  *)
    echo "build.sh: unknown BUILD_ENGINE=${engine} (docker|buildah)" >&2
    exit 2
    ;;
esac

echo "built ${IMAGE} (${image_id}) version=${VERSION} revision=${GIT_SHA} created=${CREATED} in $(( $(date +%s) - start ))s"
echo "run it with: BHASHA_IMAGE_DIGEST=${image_id} docker compose -f docker/compose.yaml run --rm trainer invoke --list"
