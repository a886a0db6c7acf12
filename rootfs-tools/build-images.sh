#!/usr/bin/env bash
# Builds the test images into OUT_DIR (default target/images), offline: mkimage.py writes
# the OCI layouts and archives; skopeo writes the classic docker-archive as `docker save`
# did before Docker 25. Skips the work when OUT_DIR was built from the same inputs.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-target/images}
mkdir -p "$out"

# The stamp covers what the images are made of: these scripts and the busybox binary.
stamp=$(cat "$here/mkimage.py" "$here/build-images.sh" /bin/busybox | sha256sum | cut -c1-16)
if [ -f "$out/.stamp" ] && [ "$(cat "$out/.stamp")" = "$stamp" ]; then
  exit 0
fi
rm -f "$out/.stamp"

python3 "$here/mkimage.py" "$out"

# skopeo insists on a signature policy; these images are our own, built just now.
policy=$(mktemp)
trap 'rm -f "$policy"' EXIT
echo '{"default":[{"type":"insecureAcceptAnything"}]}' > "$policy"
rm -f "$out/busybox.docker.tar"
skopeo --policy "$policy" copy --quiet "oci:$out/busybox:latest" \
  "docker-archive:$out/busybox.docker.tar:docker.io/library/busybox:latest"

echo "$stamp" > "$out/.stamp"
echo "test images in $out"
