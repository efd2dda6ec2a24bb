# shadow-proxy: a slim image that runs as a non-root user.
#   docker build -t shadow-proxy .
#   docker run -p 8080:8080 -v $PWD/my-config.yaml:/etc/shadow-proxy/config.yaml:ro shadow-proxy
# The config is read from /etc/shadow-proxy/config.yaml (override with SHADOW_PROXY_CONFIG).
# The example configs are in /etc/shadow-proxy/examples/.
FROM python:3.11-slim AS build
# Optional extras, e.g. --build-arg EXTRAS=export for `capture export --format parquet`.
ARG EXTRAS=
WORKDIR /src
COPY pyproject.toml README.md ./
COPY proxy ./proxy
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".${EXTRAS:+[$EXTRAS]}"

# The model-server stand-in (loadtest/model_server.py) for configs/compose/, with the same
# dependencies as the proxy: docker build --target models -t shadow-proxy-models .
FROM python:3.11-slim AS models
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin model
COPY loadtest/ /app/loadtest/
WORKDIR /app
USER 10001:10001
EXPOSE 9001
STOPSIGNAL SIGTERM
CMD ["python", "-m", "loadtest.model_server", "--host", "0.0.0.0", "--port", "9001"]

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    SHADOW_PROXY_CONFIG=/etc/shadow-proxy/config.yaml \
    SHADOW_PROXY_HEALTH_URL=http://127.0.0.1:8080/healthz
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin shadow
COPY configs/ /etc/shadow-proxy/examples/
# The embedded prediction store's default file (store.path is relative) lives here.
RUN mkdir -p /var/lib/shadow-proxy && chown 10001:10001 /var/lib/shadow-proxy
WORKDIR /var/lib/shadow-proxy
VOLUME /var/lib/shadow-proxy
USER 10001:10001
# 8080: the proxy; 9464 and 9901 when the config puts metrics.listen and admin.listen there.
EXPOSE 8080
# python is in the image already; curl is not.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ['SHADOW_PROXY_HEALTH_URL'], timeout=2)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["shadow-proxy"]
CMD ["run"]
