#!/usr/bin/env bash
# Build virtainer's container images locally, without a registry.
#
#   scripts/build-images.sh [VARIANT...]          # default: generic
#
# VARIANT is generic, debian, ubuntu, fedora or centos. Distro variants bake the cloud image
# pinned in container/images.env, unless one of these overrides it (debian is what our tests use):
#   IMAGE_FILE=/path/to/base.qcow2 [IMAGE_SHA256=...]   bake a local file (copied into the context)
#   IMAGE_URL=http://... IMAGE_SHA256=...                download at build time, sha256 verified
#   OS_VARIANT=debian12                                   the guest's OS variant baked as default
#
# Base image (BASE_IMAGE): default "local", a Debian 12 base made here from Debian packages
# (mmdebstrap | docker import) because our machines have no registry; set BASE_IMAGE=debian:
# bookworm-slim on a machine that can pull. Both the local base and every virtainer image are
# cached by content hash: an image whose inputs did not change is not rebuilt.
#
# Tags: virtainer/VARIANT:latest and virtainer/VARIANT:<key16>; TAG_SUFFIX=-x adds "-x" to the
# repository name (tests use it so they never replace a user's images). The last line printed
# for each variant is "built|cached virtainer/VARIANT:<key16>".
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
log() { printf '[build-images] %s\n' "$*" >&2; }
die() { printf 'build-images.sh: %s\n' "$*" >&2; exit 2; }

BASE_IMAGE=${BASE_IMAGE:-local}
BASE_VERSION=1 # bump to rebuild the local base (e.g. for newer Debian packages)
SOURCES=${SOURCES:-/etc/apt/sources.list.d/debian.sources}
[ -f "$SOURCES" ] || SOURCES=/etc/apt/sources.list
TAG_SUFFIX=${TAG_SUFFIX:-}

command -v docker >/dev/null || die "docker is not installed (scripts/setup-host.sh installs it)"
docker info >/dev/null 2>&1 || die "the Docker engine is not running (scripts/setup-host.sh starts it)"

image_exists() { docker image inspect "$1" >/dev/null 2>&1; }
key_of() { sha256sum | cut -c1-16; }

# ---- the local Debian 12 base --------------------------------------------------------------
build_local_base() {
  command -v mmdebstrap >/dev/null || die "mmdebstrap is not installed (apt-get install mmdebstrap)"
  # minbase, without docs/man/locales: the same role as debian:bookworm-slim
  local options=(
    --variant=minbase --aptopt='Acquire::Check-Valid-Until "false"'
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*'
    --dpkgopt='path-include=/usr/share/locale/locale.alias' --dpkgopt='path-exclude=/usr/share/doc/*'
    --dpkgopt='path-include=/usr/share/doc/*/copyright' --dpkgopt='path-exclude=/usr/share/info/*'
  )
  local key
  key=$( { echo "virtainer-base $BASE_VERSION"; printf '%s\n' "${options[@]}"; cat "$SOURCES"; } | key_of)
  local tag="virtainer/base:bookworm-$key"
  if image_exists "$tag"; then
    log "base image $tag is cached"
  else
    log "building base image $tag from Debian packages (mmdebstrap, ~30-60 s)"
    local started=$SECONDS
    mmdebstrap --quiet "${options[@]}" bookworm - "$SOURCES" \
      | docker import --change 'CMD ["bash"]' --change 'ENV LANG=C.UTF-8' - "$tag" >/dev/null
    log "base image built in $((SECONDS - started)) s"
  fi
  docker tag "$tag" virtainer/base:bookworm
  BASE_REF=$tag
}

if [ "$BASE_IMAGE" = local ]; then
  build_local_base
else
  BASE_REF=$BASE_IMAGE
fi
BASE_ID=$(docker image inspect -f '{{.Id}}' "$BASE_REF" 2>/dev/null) \
  || die "base image $BASE_REF is not available (no registry here? use BASE_IMAGE=local)"

# ---- virtainer images ----------------------------------------------------------------------
# shellcheck source=../container/images.env
. "$REPO/container/images.env"

stage_api_wheels() { # stage_api_wheels DIR: the REST API's wheels (container/api-requirements.txt)
  # Downloaded here, with the host's pip settings, and cached by the list's hash: the image build
  # itself then needs no network and compiles nothing.
  local dir=$1 key cache pip
  key=$(key_of < "$REPO/container/api-requirements.txt")
  cache=${VIRTAINER_WHEEL_CACHE:-/var/cache/virtainer/api-wheels}/$key
  if [ ! -f "$cache/.complete" ]; then
    pip=("$REPO/.venv/bin/python" -m pip)
    [ -x "$REPO/.venv/bin/python" ] || pip=(python3 -m pip)
    rm -rf "$cache" && mkdir -p "$cache"
    "${pip[@]}" download -q --no-deps --only-binary=:all: --python-version 3.11 --implementation cp \
      --abi cp311 --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 \
      -d "$cache" -r "$REPO/container/api-requirements.txt" || die "cannot download the API's wheels"
    touch "$cache/.complete"
  fi
  mkdir -p "$dir/api-wheels"
  cp "$cache"/*.whl "$dir/api-wheels/"
}

stage_context() { # stage_context DIR: the build context, nothing but what the image needs
  local dir=$1
  mkdir -p "$dir/guest"
  stage_api_wheels "$dir"
  cp "$REPO"/container/Dockerfile "$REPO"/container/entrypoint.py "$REPO"/container/qemu.conf \
    "$REPO"/container/healthcheck.sh "$REPO"/container/fetch-image.py "$dir/"
  (cd "$REPO" && find virtainer -name __pycache__ -prune -o -type f \( -name '*.py' -o -name '*.j2' -o -name py.typed \) -print0 \
    | tar --null -T - -cf -) | tar -xf - -C "$dir"
  cp -r "$REPO/virtainer/api/ui" "$dir/virtainer/api/"  # the web UI, with its vendored assets
}

build_variant() {
  local variant=$1 url="" sha256="" sha512="" file="" os_variant=""
  local upper=${variant^^}
  case $variant in
    generic) ;;
    debian|ubuntu|fedora|centos)
      local url_var="${upper}_IMAGE_URL" sha_var="${upper}_IMAGE_SHA256" sha512_var="${upper}_IMAGE_SHA512"
      local os_var="${upper}_OS_VARIANT"
      url=${!url_var}; sha256=${!sha_var}; sha512=${!sha512_var}; os_variant=${!os_var} ;;
    *) die "unknown variant '$variant': one of generic, debian, ubuntu, fedora, centos" ;;
  esac
  if [ "$variant" != generic ]; then
    if [ -n "${IMAGE_FILE:-}" ]; then
      [ -f "$IMAGE_FILE" ] || die "IMAGE_FILE=$IMAGE_FILE is not a file"
      file=$IMAGE_FILE; url=""; sha256=${IMAGE_SHA256:-}; sha512=""
    elif [ -n "${IMAGE_URL:-}" ]; then
      url=$IMAGE_URL; sha256=${IMAGE_SHA256:-}; sha512=${IMAGE_SHA512:-}
    elif [ -n "${IMAGE_SHA256:-}" ]; then
      sha256=$IMAGE_SHA256; sha512=""
    fi
    if [ -n "$url" ] && [ -z "$sha256$sha512" ]; then
      die "$variant: no checksum for $url (set IMAGE_SHA256, or pin it in container/images.env)"
    fi
    os_variant=${OS_VARIANT:-$os_variant}
  fi

  local file_sha=""
  [ -z "$file" ] || file_sha=$(sha256sum "$file" | cut -d' ' -f1)
  if [ -n "$file" ] && [ -n "$sha256" ] && [ "$file_sha" != "$sha256" ]; then
    die "IMAGE_FILE $file has sha256 $file_sha, not IMAGE_SHA256=$sha256"
  fi
  local key
  key=$( {
    echo "virtainer-image $variant $BASE_ID $url $sha256 $sha512 $file_sha $os_variant"
    cat "$REPO"/container/Dockerfile "$REPO"/container/entrypoint.py "$REPO"/container/qemu.conf \
      "$REPO"/container/healthcheck.sh "$REPO"/container/fetch-image.py "$REPO"/container/api-requirements.txt
    (cd "$REPO" && find virtainer -name __pycache__ -prune -o -type f \( -name '*.py' -o -name '*.j2' \) -print \
      | LC_ALL=C sort | xargs sha256sum)
    (cd "$REPO" && find virtainer/api/ui -type f | LC_ALL=C sort | xargs sha256sum)
  } | key_of)
  local name="virtainer/${variant}${TAG_SUFFIX}"
  if image_exists "$name:$key"; then
    docker tag "$name:$key" "$name:latest"
    echo "cached $name:$key"
    return
  fi

  local context
  context=$(mktemp -d "${TMPDIR:-/var/tmp}/virtainer-context.XXXXXX")
  trap 'rm -rf "$context"' RETURN
  stage_context "$context"
  if [ -n "$file" ]; then # a hard link costs nothing; a copy when across file systems
    ln "$file" "$context/guest/base.img" 2>/dev/null || cp "$file" "$context/guest/base.img"
    [ -n "$sha256" ] || sha256=$file_sha
  fi
  log "building $name:$key (base $BASE_REF)"
  local started=$SECONDS
  # --network host: a build-time IMAGE_URL may be served by this host (tests do, on 127.0.0.1)
  DOCKER_BUILDKIT=0 docker build --quiet --network host \
    --build-arg "BASE_IMAGE=$BASE_REF" \
    --build-arg "VARIANT=$variant" \
    --build-arg "OS_VARIANT=$os_variant" \
    --build-arg "IMAGE_URL=$url" \
    --build-arg "IMAGE_SHA256=$sha256" \
    --build-arg "IMAGE_SHA512=$sha512" \
    --label "dev.virtainer.build-key=$key" \
    -t "$name:$key" -t "$name:latest" "$context" >/dev/null
  log "built $name:$key in $((SECONDS - started)) s"
  echo "built $name:$key"
}

variants=("$@")
[ ${#variants[@]} -gt 0 ] || variants=(generic)
"$REPO"/scripts/build-ui.sh  # the web UI's vendored noVNC and xterm.js, before the key is computed
for variant in "${variants[@]}"; do
  build_variant "$variant"
done
