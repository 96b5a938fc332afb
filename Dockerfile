# The opslab controller. It copies a binary built on the host (`cargo build --release`, as
# scripts/build-images does) instead of compiling in a build stage: that keeps the image buildable
# where no registry serves a Rust image and no toolchain can be fetched inside a build, and the image
# small. The host build must link against the same glibc as the base (Debian 12, or older).
ARG BASE=debian:bookworm-slim
FROM ${BASE}
RUN printf 'path-exclude=/usr/share/doc/*\npath-exclude=/usr/share/man/*\npath-exclude=/usr/share/locale/*\n' \
      > /etc/dpkg/dpkg.cfg.d/opslab-slim \
 && apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/cache/apt/archives/*.deb /var/log/apt /var/log/dpkg.log
COPY target/release/opslab /usr/local/bin/opslab
# What the `replay` provider plays when no model is configured (scripts/demo without a key).
COPY scenarios /usr/share/opslab/scenarios
LABEL org.opencontainers.image.title="opslab" \
      org.opencontainers.image.description="An autonomous incident responder: the controller and its CLI"
ENV OPSLAB_INCIDENTS=/incidents \
    OPSLAB_STORE=/var/lib/opslab/opslab.db \
    OPSLAB_LISTEN=0.0.0.0:8080 \
    OPSLAB_REPLAY_SCENARIOS=/usr/share/opslab/scenarios
VOLUME /var/lib/opslab
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD bash -c 'exec 3<>/dev/tcp/127.0.0.1/8080 && printf "GET /readyz HTTP/1.0\r\n\r\n" >&3 && head -n1 <&3 | grep -q " 200 "'
ENTRYPOINT ["opslab"]
CMD ["controller"]
