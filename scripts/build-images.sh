#!/usr/bin/env bash
# Build the jupyter-claude-pods images (sandbox, proxy, jupyter) with podman or docker, from
# the repository root as the build context, and optionally import them into k3s.
#
# Usage: scripts/build-images.sh [options] [sandbox|proxy|jupyter ...]   (default: all three)
#   --engine podman|docker  build tool (default: $CONTAINER_ENGINE, else podman, else docker)
#   --base IMAGE            Debian 12 base of every image (build arg BASE_IMAGE; default: the
#                           digest-pinned debian:12.12-slim named in each Containerfile)
#   --node-image IMAGE      Node.js image of the build stages that need npm (NODE_IMAGE)
#   --ca-file FILE          CA bundle (PEM, public roots included) for npm, pip and yarn in
#                           the build stages, e.g. behind a TLS-intercepting egress proxy;
#                           handed over as the build secret build_ca (default: $BUILD_CA_FILE)
#   --version V             image tag (default: the package version)
#   --import-k3s            then `save` each image into `k3s ctr images import -`
#   --dry-run               print the commands instead of running them
#   -h, --help
# Tags: localhost/claude-pods-<name>:<version> (never :latest). Extra arguments for the
# build tool can be given in $BUILD_ARGS (word-split).
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; }
die() { echo "build-images: $*" >&2; exit 2; }

engine=${CONTAINER_ENGINE:-}
base=""
node_image=""
ca_file=${BUILD_CA_FILE:-}
version=""
import_k3s=false
dry_run=false
images=()
while (($#)); do
  case $1 in
    --engine) engine=${2:?--engine needs a value}; shift 2 ;;
    --base) base=${2:?--base needs an image}; shift 2 ;;
    --node-image) node_image=${2:?--node-image needs an image}; shift 2 ;;
    --ca-file) ca_file=${2:?--ca-file needs a file}; shift 2 ;;
    --version) version=${2:?--version needs a value}; shift 2 ;;
    --import-k3s) import_k3s=true; shift ;;
    --dry-run) dry_run=true; shift ;;
    -h|--help) usage; exit 0 ;;
    sandbox|proxy|jupyter) images+=("$1"); shift ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
done
((${#images[@]})) || images=(sandbox proxy jupyter)

if [ -z "$engine" ]; then
  if command -v podman >/dev/null; then engine=podman
  elif command -v docker >/dev/null; then engine=docker
  else die "neither podman nor docker is installed"
  fi
fi
case $engine in podman|docker) ;; *) die "--engine must be podman or docker, not $engine" ;; esac
$dry_run || command -v "$engine" >/dev/null || die "$engine is not installed"

if [ -z "$version" ]; then
  version=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' jupyter_claude_pods/__init__.py)
  [ -n "$version" ] || die "cannot read __version__ from jupyter_claude_pods/__init__.py"
fi
[ "$version" != latest ] || die "refusing to tag images :latest"
if [ -n "$ca_file" ] && [ ! -s "$ca_file" ]; then die "CA file $ca_file is missing or empty"; fi

revision=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
if [ "$revision" != unknown ] && [ -n "$(git status --porcelain 2>/dev/null | head -1)" ]; then
  revision="$revision-dirty"
fi
source_url=$(git remote get-url origin 2>/dev/null || true)
# Only a URL names the source (a clone of a local path has a path as its origin).
case $source_url in https://* | git@* | ssh://*) ;; *) source_url="" ;; esac

common=(--build-arg "VERSION=$version" --build-arg "REVISION=$revision")
[ -z "$source_url" ] || common+=(--build-arg "SOURCE_URL=$source_url")
[ -z "$base" ] || common+=(--build-arg "BASE_IMAGE=$base")
[ -z "$node_image" ] || common+=(--build-arg "NODE_IMAGE=$node_image")
[ -z "$ca_file" ] || common+=(--secret "id=build_ca,src=$ca_file")
# shellcheck disable=SC2206 # word splitting of BUILD_ARGS is the point
[ -z "${BUILD_ARGS:-}" ] || common+=($BUILD_ARGS)

# Run a command, or print it (shell-quoted) with --dry-run.
run() {
  if $dry_run; then printf '%q ' "$@"; echo; else "$@"; fi
}

build() {
  local name=$1 file="images/$1/Containerfile" tag="localhost/claude-pods-$1:$version"
  local args=(-f "$file" -t "$tag" "${common[@]}")
  if [ "$engine" = podman ]; then
    # docker format: the OCI image config has no HEALTHCHECK. Docker (BuildKit) finds the
    # ignore file next to the Containerfile by itself.
    args+=(--format docker --ignorefile "$file.dockerignore")
    run podman build "${args[@]}" .
  else
    run env DOCKER_BUILDKIT=1 docker build "${args[@]}" .
  fi
  $dry_run || echo "build-images: built $tag"
}

import_into_k3s() {
  local tag="localhost/claude-pods-$1:$version" sudo=()
  [ "$(id -u)" = 0 ] || sudo=(sudo)
  if $dry_run; then
    echo "$engine save $tag | ${sudo[*]}${sudo:+ }k3s ctr --namespace k8s.io images import -"
    return
  fi
  command -v k3s >/dev/null || die "k3s is not installed on this machine (--import-k3s)"
  "$engine" save "$tag" | "${sudo[@]}" k3s ctr --namespace k8s.io images import -
  echo "build-images: imported $tag into k3s (containerd namespace k8s.io)"
}

for name in "${images[@]}"; do build "$name"; done
if $import_k3s; then
  for name in "${images[@]}"; do import_into_k3s "$name"; done
fi
