#!/usr/bin/env bash
# Installs what clickrec's tests and local runs need and the machine lacks.
# Idempotent: a second run only checks. Debian packages: redis-server, kcat,
# prometheus (promtool), iproute2, chromium (the browser test); Maven Central:
# Kafka jars; npm: the ONNX Runtime library; Go module proxy: the Temporal CLI
# and go-task.
source "$(dirname "$0")/lib.sh"
here=$(dirname "$0")

command -v go >/dev/null || die "go not found: install Go 1.26 (https://go.dev/dl)"
missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v kcat >/dev/null || missing+=(kcat)
command -v promtool >/dev/null || missing+=(prometheus)
command -v ip >/dev/null || missing+=(iproute2)
command -v java >/dev/null || missing+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || missing+=(maven)
command -v npm >/dev/null || missing+=(npm)
# Headless Chromium drives the storefront page in web's browser test.
command -v chromium >/dev/null || missing+=(chromium)
# Debian's ONNX checker validates exported models in model/onnx's tests.
/usr/bin/python3 -c 'import onnx' 2>/dev/null || missing+=(python3-onnx)
if ((${#missing[@]})); then apt_install "${missing[@]}"; else log "deps: Debian packages present"; fi

"$here/kafka.sh" install
"$here/onnxruntime.sh" install >/dev/null
"$here/temporal.sh" install >/dev/null
"$here/task" --version >/dev/null
log "deps: all installed (cache: $CLICKREC_CACHE)"
