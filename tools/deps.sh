#!/bin/sh
# Installs the Debian 12 packages streamml needs, only those missing.
#   tools/deps.sh          install what is missing (needs root or sudo)
#   tools/deps.sh --check  exit 1 if anything is missing, install nothing
set -eu
PKGS="build-essential pkg-config librdkafka-dev libavro-dev libhiredis-dev libcmocka-dev
libjansson-dev libopenblas-dev redis-server libmicrohttpd-dev libcurl4-openssl-dev libssl-dev
libjpeg62-turbo-dev libpng-dev libprotobuf-c-dev protobuf-c-compiler libonnx-dev
python3 python3-numpy python3-xgboost python3-sklearn python3-scipy python3-torch
python3-torchvision python3-onnx python3-confluent-kafka python3-redis python3-yaml"
# Schema Registry issue: Apache Avro's Python reader, the reference for schema resolution.
PKGS="$PKGS python3-avro"
# Deployment issue: Debian's docker-compose 1.29 validates docker-compose.yml without an
# engine (`docker-compose config -q`); with --no-install-recommends it is Python only.
PKGS="$PKGS docker-compose"
# Feature specs issue: libyaml reads the YAML specs (errors name file and line).
PKGS="$PKGS libyaml-dev"
# ... and its "bring your own data" example: the Grunfeld panel of python3-statsmodels.
PKGS="$PKGS python3-statsmodels"
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
