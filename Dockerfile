# syntax=docker/dockerfile:1
#
# clickrec: one image for every command (hotpath, worker, gen, …).
#
#   docker build -t clickrec .
#   docker run --rm clickrec --help
#   docker run --rm -e CLICKREC_KAFKA_BROKERS=kafka:9092 clickrec hotpath --instance-id hotpath-0
#
# Three stages: the ONNX Runtime library from the npm package onnxruntime-node
# (the same file scripts/onnxruntime.sh installs), the Go build (cgo: the ONNX
# binding loads that library with dlopen), and a slim Debian runtime with the
# same glibc as the build stage. deploy/compose and deploy/k8s run this image.

ARG GO_VERSION=1.26
ARG DEBIAN=trixie
ARG ORT_VERSION=1.24.3

FROM node:22-slim AS ort
ARG ORT_VERSION
WORKDIR /ort
RUN npm pack --silent "onnxruntime-node@${ORT_VERSION}" \
 && tar -xzf "onnxruntime-node-${ORT_VERSION}.tgz" package/bin/napi-v6/linux/x64 \
 && mkdir -p /out \
 && cp package/bin/napi-v6/linux/x64/libonnxruntime.so.1* /out/ \
 && test -f /out/libonnxruntime.so.1

FROM golang:${GO_VERSION}-${DEBIAN} AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=1 go build -trimpath -buildvcs=false -ldflags="-s -w" -o /out/clickrec ./cmd/clickrec

FROM debian:${DEBIAN}-slim
# ca-certificates: TLS to Kafka with the system CAs; curl: container health checks (/readyz).
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/*
COPY --from=ort /out/ /usr/local/lib/clickrec/
COPY --from=build /out/clickrec /usr/local/bin/clickrec
# Every flag also reads its CLICKREC_* variable; these are the container defaults.
ENV CLICKREC_ONNXRUNTIME_LIB=/usr/local/lib/clickrec/libonnxruntime.so.1 \
    CLICKREC_HTTP_ADDR=0.0.0.0:9464 \
    CLICKREC_WORKER_HTTP_ADDR=0.0.0.0:9464 \
    CLICKREC_LOG_FORMAT=json
USER 65532:65532
EXPOSE 9464
ENTRYPOINT ["clickrec"]
CMD ["--help"]
