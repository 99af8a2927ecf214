# streamml: one image for every worker; the command picks the process.
#   docker build -t streamml:0.1.0 .
#   docker run --rm streamml:0.1.0 streamml-transactions --help
# Build stage on Debian 12 with the -dev packages; run stage on debian:12-slim with only
# the runtime libraries, as a non-root user. Binaries in /usr/local/bin, schemas and
# models in /usr/share/streamml (the working directory), configuration in /etc/streamml.
ARG DEBIAN_RELEASE=12

FROM debian:${DEBIAN_RELEASE} AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential pkg-config \
      librdkafka-dev libavro-dev libhiredis-dev libjansson-dev libopenblas-dev \
      libmicrohttpd-dev libcurl4-openssl-dev libjpeg62-turbo-dev libpng-dev \
      libprotobuf-c-dev protobuf-c-compiler \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Makefile ./
COPY common common
COPY tools tools
COPY workers workers
# Only the programs: tests and benchmarks stay out of the image.
RUN bins="build/streamml"; for w in workers/*/; do bins="$bins build/streamml-$(basename "$w")"; done; \
    make -j"$(nproc)" $bins && strip $bins && mkdir -p /out && cp $bins /out/

FROM debian:${DEBIAN_RELEASE}-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
      librdkafka1 libsasl2-modules libavro23 libhiredis0.14 libjansson4 libcurl4 \
      libmicrohttpd12 libopenblas0-pthread libprotobuf-c1 libpng16-16 libjpeg62-turbo \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 streamml \
 && useradd --system --uid 10001 --gid streamml --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin streamml
COPY --from=build /out/ /usr/local/bin/
COPY schemas /usr/share/streamml/schemas
COPY models/*.json /usr/share/streamml/models/
COPY models/clickstream/gru4rec.onnx /usr/share/streamml/models/clickstream/gru4rec.onnx
COPY deploy/config/streamml.conf /etc/streamml/streamml.conf
WORKDIR /usr/share/streamml
USER 10001:10001
# metrics.port: /metrics, /healthz, /readyz (the metrics issue).
EXPOSE 9464
CMD ["streamml", "--help"]
