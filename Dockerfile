# msrp-gw container image.
#
#   docker build -t msrp-gw:0.1.0 .
#   docker run --rm -e MSRPGW_MGMT__TOKEN=secret -e MSRPGW_SIP__ADVERTISED_HOST=192.0.2.10 \
#       -p 5060:5060/udp -p 5060:5060/tcp -p 2855:2855 -p 8080:8080 msrp-gw:0.1.0
#
# Stage "build" builds the msrp-gw wheel and installs it, with its dependencies, into a
# virtual environment in /opt/msrp-gw; the final stage copies that environment onto a clean
# slim image and runs `msrp-gw run` as an unprivileged user. Configuration: the file
# /etc/msrp-gw/gw.toml (deploy/gw.toml; mount your own over it) plus MSRPGW_<SECTION>__<KEY>
# environment variables, which win. See docs/deployment.md.
#
# The base image is pinned to a Python minor version and a Debian release. For reproducible
# builds pin it by digest as well (python:3.11-slim-bookworm@sha256:...), in both stages.

FROM python:3.11-slim-bookworm AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
COPY pyproject.toml README.md LICENSE constraints.txt ./
COPY gw ./gw

RUN python -m pip wheel --no-deps --wheel-dir /wheels . \
    && python -m venv /opt/msrp-gw \
    && /opt/msrp-gw/bin/python -m pip install -c constraints.txt /wheels/msrp_gw-*.whl \
    && /opt/msrp-gw/bin/msrp-gw --version


FROM python:3.11-slim-bookworm AS runtime

LABEL org.opencontainers.image.title="msrp-gw" \
      org.opencontainers.image.description="Gateway between SIP MESSAGE and MSRP instant messaging" \
      org.opencontainers.image.licenses="Apache-2.0"

# A fixed numeric uid/gid, so Kubernetes can check runAsNonRoot and volumes can be chowned.
RUN groupadd --system --gid 10001 msrpgw \
    && useradd --system --uid 10001 --gid msrpgw --no-create-home \
       --home-dir /var/lib/msrp-gw --shell /usr/sbin/nologin msrpgw \
    && mkdir -p /etc/msrp-gw /var/lib/msrp-gw \
    && chown msrpgw:msrpgw /var/lib/msrp-gw

COPY --from=build /opt/msrp-gw /opt/msrp-gw
COPY deploy/gw.toml /etc/msrp-gw/gw.toml
COPY deploy/healthcheck.py /usr/local/bin/msrp-gw-healthcheck

ENV PATH=/opt/msrp-gw/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

USER 10001:10001
WORKDIR /var/lib/msrp-gw

# Open files: one per SIP/MSRP connection. The node raises its soft RLIMIT_NOFILE to the
# hard limit at start (logged) and warns at 90 % of it; give it room, e.g.
# `docker run --ulimit nofile=65536:65536` (Kubernetes: the runtime's default, often 1048576).
# SIP (UDP and TCP), MSRP, management HTTP (/mi, /metrics, /healthz, /readyz)
EXPOSE 5060/udp 5060/tcp 2855/tcp 8080/tcp

# SIGTERM drains: new work gets 503, owned sessions end with BYE; allow
# gateway.delivery_timeout + about 20 s before the engine kills the container.
STOPSIGNAL SIGTERM

HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "/usr/local/bin/msrp-gw-healthcheck", "/healthz"]

ENTRYPOINT ["msrp-gw", "run"]
CMD ["--config", "/etc/msrp-gw/gw.toml"]
