#!/usr/bin/env bash
# Install what building and testing state_hub_events needs, from Debian's
# packages, when it is missing.  Runs apt-get as root, or through sudo.
set -euo pipefail

#
# install-deps.sh [matrix|deb]: also what make test-matrix (debootstrap) or
# make deb (Debian's packaging tools) needs.
pkgs=(postgresql-15 postgresql-server-dev-15 libnats-dev nats-server uuid-dev
      libipc-run-perl libjson-xs-perl python3 python3-pydantic openssl make gcc
      clang libclang-rt-dev)
case ${1:-} in
    matrix) pkgs+=(debootstrap) ;;
    deb) pkgs+=(debhelper dpkg-dev build-essential postgresql-server-dev-all postgresql-all) ;;
esac
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# Python 3 with pydantic validates envelopes in the state hub kit's test when present.
# JSON::XS (libjson-xs-perl) decodes messages in the TAP tests ~100 times
# faster than JSON::PP, which they fall back to.
# clang with its runtime (libFuzzer, sanitizers) builds the fuzz harnesses.
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi

echo "installing: ${missing[*]}"
if [ "$(id -u)" -eq 0 ]; then
    SUDO=
else
    SUDO=sudo
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
