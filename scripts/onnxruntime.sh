#!/usr/bin/env bash
# The ONNX Runtime shared library, taken from the npm package onnxruntime-node (its
# tarball carries the Linux x64 libonnxruntime.so.1). The version matches the C API
# that github.com/yalue/onnxruntime_go was built for (see DESIGN.md).
#
#   scripts/onnxruntime.sh install   prints the absolute path of the library
#
# Export the printed path as CLICKREC_ONNXRUNTIME_LIB for clickrec.
source "$(dirname "$0")/lib.sh"

ORT_VERSION=1.24.3
DIR="$CLICKREC_CACHE/onnxruntime-$ORT_VERSION"
LIB="$DIR/libonnxruntime.so.1"

install() {
  if [[ ! -f $LIB ]]; then
    command -v npm >/dev/null || die "npm not found: apt-get install npm (only used to fetch the ONNX Runtime library)"
    log "onnxruntime: fetching onnxruntime-node@$ORT_VERSION from npm"
    local tmp
    tmp=$(mktemp -d)
    (cd "$tmp" && npm pack --silent "onnxruntime-node@$ORT_VERSION" >/dev/null) || die "npm pack onnxruntime-node@$ORT_VERSION failed"
    tar -xzf "$tmp"/onnxruntime-node-*.tgz -C "$tmp" package/bin/napi-v6/linux/x64 ||
      die "the onnxruntime-node tarball has no package/bin/napi-v6/linux/x64"
    mkdir -p "$DIR"
    cp "$tmp"/package/bin/napi-v6/linux/x64/libonnxruntime.so.1* "$DIR/"
    [[ -f $LIB ]] || cp "$(ls "$tmp"/package/bin/napi-v6/linux/x64/libonnxruntime.so.* | head -1)" "$LIB"
    rm -rf "$tmp"
    log "onnxruntime: $LIB"
  fi
  echo "$LIB"
}

case "${1:-install}" in
install) install ;;
*) echo "usage: $0 install" >&2; exit 2 ;;
esac
