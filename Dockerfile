# One image for every amrwatch service; compose picks the service by command.
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY amrwatch amrwatch
COPY proto proto
COPY services services
COPY archive archive
COPY registry registry
COPY audit audit
COPY study study
# The project itself with its file-format readers (MNE-Python, pyxdf); its own pyproject bounds the versions.
# hadolint ignore=DL3013
RUN pip install --no-cache-dir --prefix=/install '.[formats]'

FROM python:3.11-slim-bookworm
LABEL org.opencontainers.image.title="amrwatch" \
      org.opencontainers.image.description="Real-time AMR monitoring during microvascular decompression" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 amrwatch \
 && useradd --system --uid 10001 --gid amrwatch --home-dir /var/lib/amrwatch --shell /usr/sbin/nologin amrwatch \
 && mkdir -p /var/lib/amrwatch \
 && chown amrwatch:amrwatch /var/lib/amrwatch
COPY --from=build /install /usr/local
# The analyzer's compiled kernels are cached on the tmpfs: the image is read-only at run time.
ENV AMRWATCH_DATA=/var/lib/amrwatch \
    NUMBA_CACHE_DIR=/tmp/numba \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
WORKDIR /var/lib/amrwatch
VOLUME ["/var/lib/amrwatch"]
ENTRYPOINT ["amrwatch"]
CMD ["--help"]
