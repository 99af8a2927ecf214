# Redis for the compose profile "embedded", from the same Debian base as the streamml image
# (no registry needed: the redis image cannot be pulled where this is tested).
ARG DEBIAN_RELEASE=12
FROM debian:${DEBIAN_RELEASE}-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends redis-server \
 && rm -rf /var/lib/apt/lists/*
USER redis
CMD ["redis-server", "--bind", "127.0.0.1", "--port", "16379", "--save", "", "--appendonly", "no"]
