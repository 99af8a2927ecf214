# streamml: one image for every worker; the command picks the process.
#   docker build -t streamml:0.1.0 .
#   docker run --rm streamml:0.1.0 streamml-transactions --help
# Build stage on Debian 12 with the -dev packages; run stage on debian:12-slim with only
# the runtime libraries, as a non-root user. Binaries in /usr/local/bin, schemas and
# models in /usr/share/streamml (the working directory), configuration in /etc/streamml.
ARG DEBIAN_RELEASE=12

# Package lists: deploy/packages/{build,run}.txt, the same files tools/deps.sh reads.
FROM debian:${DEBIAN_RELEASE} AS build
COPY deploy/packages/build.txt /tmp/packages.txt
RUN apt-get update \
 && apt-get install -y --no-install-recommends $(sed 's/#.*//' /tmp/packages.txt) \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Makefile ./
COPY common common
COPY tools tools
COPY workers workers
# The built-in feature spec is compiled in from these (Makefile: fspec_builtin.h).
COPY models/txn-v1.yaml models/txn-v1.yaml
COPY schemas/transaction_event.avsc schemas/transaction_event.avsc
# Only the programs: tests and benchmarks stay out of the image.
RUN bins="build/streamml"; for w in workers/*/; do bins="$bins build/streamml-$(basename "$w")"; done; \
    make -j"$(nproc)" $bins && strip $bins && mkdir -p /out && cp $bins /out/

FROM debian:${DEBIAN_RELEASE}-slim
COPY deploy/packages/run.txt /tmp/packages.txt
RUN apt-get update \
 && apt-get install -y --no-install-recommends $(sed 's/#.*//' /tmp/packages.txt) \
 && rm -rf /var/lib/apt/lists/* /tmp/packages.txt \
 && groupadd --system --gid 10001 streamml \
 && useradd --system --uid 10001 --gid streamml --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin streamml
COPY --from=build /out/ /usr/local/bin/
COPY schemas /usr/share/streamml/schemas
COPY models/*.json models/*.yaml /usr/share/streamml/models/
COPY models/clickstream/gru4rec.onnx /usr/share/streamml/models/clickstream/gru4rec.onnx
COPY models/images/fundus_cnn.onnx models/images/quality.json /usr/share/streamml/models/images/
COPY deploy/config/streamml.conf /etc/streamml/streamml.conf
# /run/streamml: the embedded profile's shared volume (the bootstrap address of
# `streamml broker`); a named volume takes this owner on first use.
RUN mkdir -p /run/streamml && chown 10001:10001 /run/streamml
WORKDIR /usr/share/streamml
USER 10001:10001
# metrics.port: /metrics, /healthz, /readyz.
EXPOSE 9464
CMD ["streamml", "--help"]
