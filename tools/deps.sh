#!/bin/sh
# Installs the Debian 12 packages streamml needs, only those missing.
#   tools/deps.sh          install what is missing (needs root or sudo)
#   tools/deps.sh --check  exit 1 if anything is missing, install nothing
set -eu
# The one list: deploy/packages/build.txt (also the Dockerfile's build stage) and
# deploy/packages/dev.txt (tests, demo, benchmarks, training).
here=$(dirname "$0")/..
PKGS=$(cat "$here/deploy/packages/build.txt" "$here/deploy/packages/dev.txt" | sed 's/#.*//')
# Reliability issue: clang (libFuzzer) only for `make fuzz`, which runs
# `tools/deps.sh --fuzz` when clang is missing.
if [ "${1:-}" = "--fuzz" ]; then
    PKGS="clang"
    shift
fi

missing=""
for p in $PKGS; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done
[ -z "$missing" ] && exit 0
if [ "${1:-}" = "--check" ]; then
    echo "missing:$missing"
    exit 1
fi
echo "deps: installing$missing"
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
# shellcheck disable=SC2086
$SUDO apt-get install -y -q --no-install-recommends $missing
