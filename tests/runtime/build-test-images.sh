#!/bin/bash
# build-test-images.sh IMAGE... - the runtime tests' images, from Debian packages (no registry).
#   busybox  FROM scratch + busybox-static and its applet links (CMD sh)
#   debian   a Debian 12 minbase (mmdebstrap | docker import, CMD bash)
#   nginx    Debian 12 minbase + nginx (CMD nginx -g 'daemon off;')
#   static   FROM scratch + one static binary (a hello program built here with gcc -static),
#            ENTRYPOINT ["/hello"], exits 3
# Tagged vt-runtime-IMAGE:<key16>, the key a hash of this file: a second run builds nothing.
# Prints one line per image: "IMAGE TAG".
set -euo pipefail
HERE=$(dirname "$(realpath "$0")")
KEY=$(sha256sum "$HERE/build-test-images.sh" | cut -c1-16)
SOURCES=/etc/apt/sources.list.d/debian.sources
[ -f "$SOURCES" ] || SOURCES=/etc/apt/sources.list
W=$(mktemp -d); trap 'rm -rf "$W"' EXIT
for image in "$@"; do
  tag=vt-runtime-$image:$KEY
  if ! docker image inspect "$tag" >/dev/null 2>&1; then
    case $image in
      busybox)
        (cd "$W" && apt-get -q -o APT::Sandbox::User=root download busybox-static >/dev/null)
        dpkg-deb -x "$W"/busybox-static_*.deb "$W/bb"
        mkdir -p "$W/ctx/bin"
        cp "$W/bb/bin/busybox" "$W/ctx/bin/"
        for applet in $("$W/bb/bin/busybox" --list); do [ "$applet" = busybox ] || ln -s busybox "$W/ctx/bin/$applet"; done
        printf 'FROM scratch\nCOPY bin /bin\nENV PATH=/bin\nCMD ["sh"]\n' > "$W/ctx/Dockerfile"
        docker build -q -t "$tag" "$W/ctx" >/dev/null ;;
      debian)
        mmdebstrap --quiet --variant=minbase --aptopt='Acquire::Check-Valid-Until "false"' \
          --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
          --dpkgopt='path-exclude=/usr/share/locale/*' bookworm - "$SOURCES" \
          | docker import --change 'CMD ["bash"]' - "$tag" >/dev/null ;;
      nginx)
        mmdebstrap --quiet --variant=minbase --include=nginx --aptopt='Acquire::Check-Valid-Until "false"' \
          --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
          --dpkgopt='path-exclude=/usr/share/locale/*' bookworm - "$SOURCES" \
          | docker import --change 'CMD ["nginx", "-g", "daemon off;"]' --change 'EXPOSE 80' - "$tag" >/dev/null ;;
      static)
        mkdir -p "$W/static"
        printf '#include <stdio.h>\nint main(int c, char **v) { printf("hello from a static binary, %%d args\\n", c - 1); return 3; }\n' > "$W/hello.c"
        gcc -static -Os -s -o "$W/static/hello" "$W/hello.c"
        printf 'FROM scratch\nCOPY hello /hello\nENTRYPOINT ["/hello"]\n' > "$W/static/Dockerfile"
        docker build -q -t "$tag" "$W/static" >/dev/null ;;
      *) echo "build-test-images: unknown image $image (busybox, debian, nginx, static)" >&2; exit 2 ;;
    esac
  fi
  echo "$image $tag"
done
