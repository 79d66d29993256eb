# syntax=docker/dockerfile:1
#
# One image for every fraudstream process; the command picks the role:
#
#   docker build -t fraudstream .
#   docker run --rm fraudstream detect      # the Bytewax detector
#   docker run --rm fraudstream api         # the review service (HTTP, page, Kafka bridge)
#   docker run --rm fraudstream simulate    # simulated transactions
#   docker run --rm fraudstream --help      # every other command
#
# Settings are FRAUDSTREAM_* environment variables (README, "Configuration"). The image
# listens on every interface (API on 8000, detector metrics on 3030) and keeps its state
# (recovery snapshots, the SQLite review database when no PostgreSQL is configured) under
# /var/lib/fraudstream: mount a volume there, or at /var/lib/fraudstream/recovery.

# --- builder: a virtual environment with fraudstream and its dependencies ---------------
FROM python:3.12-slim AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PATH=/opt/fraudstream/bin:$PATH

# Every dependency ships a manylinux wheel for CPython 3.12, so no compiler is needed.
RUN python -m venv /opt/fraudstream \
    && pip install --upgrade "pip>=25.1"

WORKDIR /src

# Dependencies first, the locked versions from requirements.txt alone (hash-checked, wheels
# only): this layer is rebuilt only when the lock changes.
COPY requirements.txt ./
RUN pip install --require-hashes --only-binary :all: -r requirements.txt

# Then the packages themselves (their web page and migrations are package data).
COPY pyproject.toml README.md ./
COPY detector ./detector
COPY models ./models
COPY api ./api
RUN pip install --no-deps . \
    && pip check \
    && fraudstream version

# --- runtime: the interpreter, the virtual environment and nothing else ----------------
FROM python:3.12-slim AS runtime

LABEL org.opencontainers.image.title="fraudstream" \
      org.opencontainers.image.description="Real-time fraud detection for payment streams: Kafka in, online River models, explainable decisions out." \
      org.opencontainers.image.licenses="Apache-2.0"

ENV PATH=/opt/fraudstream/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    FRAUDSTREAM_HOME=/var/lib/fraudstream \
    FRAUDSTREAM_API_HOST=0.0.0.0 \
    FRAUDSTREAM_METRICS_HOST=0.0.0.0 \
    FRAUDSTREAM_LOG_FORMAT=json

# A fixed numeric user, so that Kubernetes can check runAsNonRoot and volumes can be
# prepared for it (uid and gid 10001).
RUN groupadd --system --gid 10001 fraudstream \
    && useradd --system --uid 10001 --gid fraudstream --home-dir /var/lib/fraudstream \
        --no-create-home --shell /usr/sbin/nologin fraudstream \
    && install -d -o fraudstream -g fraudstream -m 0750 \
        /var/lib/fraudstream /var/lib/fraudstream/recovery

COPY --from=builder /opt/fraudstream /opt/fraudstream

USER 10001:10001
WORKDIR /var/lib/fraudstream

# 8000: the API (and its /metrics); 3030: the detector's /metrics.
EXPOSE 8000 3030

ENTRYPOINT ["fraudstream"]
CMD ["--help"]
