#!/usr/bin/env bash
# Build the hsmgate container image from scratch with podman (no base image is pulled).
#
#   deploy/container/build.sh [--bin PATH] [--tag NAME] [--no-strip]
#
#   --bin PATH   the hsmgate binary (default: target/release/hsmgate, built when missing)
#   --tag NAME   the image name (default: localhost/hsmgate:latest)
#   --no-strip   keep debug information (the release profile has line tables)
#
# Stages the binary, the shared libraries `ldd` lists for it and /etc/passwd, group and
# nsswitch.conf entries in a temporary context, then `podman build --runtime runc`.
# Prints the image name and size.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
bin=""
tag=localhost/hsmgate:latest
strip=1
while (($#)); do
  case "$1" in
    --bin) bin="${2:?--bin needs a file}"; shift 2 ;;
    --tag) tag="${2:?--tag needs a name}"; shift 2 ;;
    --no-strip) strip=0; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "build.sh: unknown argument: $1 (see --help)" >&2; exit 64 ;;
  esac
done
command -v podman >/dev/null || { echo "build.sh: podman is not installed (apt-get install podman runc)" >&2; exit 1; }
if [[ -z $bin ]]; then
  bin="${CARGO_TARGET_DIR:-$repo/target}/release/hsmgate"
  [[ -x $bin ]] || (cd "$repo" && cargo build --release --locked -p hsmgate-proxy)
fi
[[ -x $bin ]] || { echo "build.sh: not an executable: $bin" >&2; exit 1; }

ctx="$(mktemp -d)"
trap 'rm -rf "$ctx"' EXIT
root="$ctx/rootfs"
install -d "$root/usr/local/bin" "$root/etc" "$root/hsm/lib"
if ((strip)); then
  objcopy --strip-debug "$bin" "$root/usr/local/bin/hsmgate"
else
  cp "$bin" "$root/usr/local/bin/hsmgate"
fi
chmod 0755 "$root/usr/local/bin/hsmgate"
# The libraries the binary links, at the paths the loader looks for them.
for lib in $(ldd "$bin" | awk '/=> \// { print $3 } /^\t\// { print $1 }'); do
  install -D -m 0755 "$(readlink -f "$lib")" "$root$lib"
done
cat >"$root/etc/passwd" <<'PASSWD'
root:x:0:0:root:/nonexistent:/nonexistent
hsmgate:x:10001:10001:hsmgate:/nonexistent:/nonexistent
PASSWD
cat >"$root/etc/group" <<'GROUP'
root:x:0:
hsmgate:x:10001:
GROUP
echo "hosts: files dns" >"$root/etc/nsswitch.conf"
cp "$here/Containerfile" "$ctx/Containerfile"
podman --runtime runc build --quiet -t "$tag" "$ctx" >/dev/null
size=$(podman image inspect --format '{{.Size}}' "$tag")
echo "$tag $((size / 1024 / 1024)) MiB ($size bytes)"
