#!/usr/bin/env bash
# Install hsmgate: the binary, the systemd units, the system user and the directories.
# Idempotent: running it again replaces the binary and the units and changes nothing
# else (an existing /etc/hsmgate/hsmgate.toml is never touched).
#
#   scripts/install.sh [--prefix PREFIX] [--bin PATH] [--unitdir DIR]
#
#   --prefix PREFIX  the binary goes to PREFIX/sbin/hsmgate (default /usr/local)
#   --bin PATH       the binary to install (default target/release/hsmgate, built
#                    with `cargo build --release` when missing)
#   --unitdir DIR    where the units go (default /etc/systemd/system)
#   DESTDIR=ROOT     stage everything under ROOT (packaging, tests); then no user is
#                    created and nothing is chowned: the sysusers.d file installed
#                    makes the user when the staged tree is installed
#                    (systemd-sysusers).
#
# Installs PREFIX/sbin/hsmgate; UNITDIR/hsmgate-native.service (native format,
# /etc/hsmgate/hsmgate.toml) and UNITDIR/hsmgate.service (the nginx drop-in), both
# from deploy/systemd/ and pointing at PREFIX/sbin/hsmgate;
# /usr/lib/sysusers.d/hsmgate.conf; the system user and group hsmgate; /etc/hsmgate
# (0750 root:hsmgate); /var/log/hsmgate (0750 hsmgate:hsmgate).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
prefix=/usr/local
bin=""
unitdir=/etc/systemd/system
while (($#)); do
  case "$1" in
    --prefix) prefix="${2:?--prefix needs a directory}"; shift 2 ;;
    --prefix=*) prefix="${1#*=}"; shift ;;
    --bin) bin="${2:?--bin needs a file}"; shift 2 ;;
    --bin=*) bin="${1#*=}"; shift ;;
    --unitdir) unitdir="${2:?--unitdir needs a directory}"; shift 2 ;;
    --unitdir=*) unitdir="${1#*=}"; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "install.sh: unknown argument: $1 (see --help)" >&2; exit 64 ;;
  esac
done
[[ $prefix == /* ]] || { echo "install.sh: --prefix must be absolute: $prefix" >&2; exit 64; }
root="${DESTDIR:-}"
if [[ -n $root ]]; then
  [[ $root == /* ]] || { echo "install.sh: DESTDIR must be absolute: $root" >&2; exit 64; }
fi
if [[ -z $bin ]]; then
  bin="${CARGO_TARGET_DIR:-$repo/target}/release/hsmgate"
  if [[ ! -x $bin ]]; then
    echo "install.sh: building $bin" >&2
    (cd "$repo" && cargo build --release --locked -p hsmgate-proxy)
  fi
fi
[[ -x $bin ]] || { echo "install.sh: not an executable: $bin" >&2; exit 1; }
sbin="$prefix/sbin/hsmgate"

install -D -m 0755 "$bin" "$root$sbin"
# Units: the installed binary's path instead of the ones written in the repository.
for unit in hsmgate-native.service hsmgate.service; do
  src="$repo/deploy/systemd/$unit"
  dst="$root$unitdir/$unit"
  install -d -m 0755 "$(dirname "$dst")"
  sed -e "s#/usr/local/sbin/hsmgate#$sbin#g" -e "s#/usr/sbin/hsmgate#$sbin#g" "$src" >"$dst.tmp"
  chmod 0644 "$dst.tmp"
  mv -f "$dst.tmp" "$dst"
done
install -D -m 0644 /dev/stdin "$root/usr/lib/sysusers.d/hsmgate.conf" <<'SYSUSERS'
# hsmgate: the proxy's system user (scripts/install.sh)
u hsmgate - "hsmgate TLS proxy" /nonexistent /usr/sbin/nologin
SYSUSERS

owner=()
if [[ -z $root ]]; then
  if ! getent passwd hsmgate >/dev/null; then
    if command -v systemd-sysusers >/dev/null; then
      systemd-sysusers /usr/lib/sysusers.d/hsmgate.conf
    else
      useradd --system --user-group --home-dir /nonexistent --no-create-home \
        --shell /usr/sbin/nologin hsmgate
    fi
  fi
  owner=(-o root -g hsmgate)
else
  echo "install.sh: DESTDIR set: no user created, nothing chowned" >&2
fi
install -d -m 0750 "${owner[@]}" "$root/etc/hsmgate"
if [[ -z $root ]]; then owner=(-o hsmgate -g hsmgate); fi
install -d -m 0750 "${owner[@]}" "$root/var/log/hsmgate"

echo "installed $root$sbin, $root$unitdir/hsmgate-native.service (native) and hsmgate.service (nginx)"
if [[ -z $root ]]; then
  if [[ -d /run/systemd/system ]]; then systemctl daemon-reload; fi
  echo "next: write /etc/hsmgate/hsmgate.toml (README), then"
  echo "      $sbin -t -c /etc/hsmgate/hsmgate.toml && systemctl enable --now hsmgate-native"
fi
