# The chordload image: the `chordload` CLI and the Celery app (`celery -A workers ...`).
# docker-compose.yml runs it as migrate, worker, beat, flower and ui (the dashboard); the same
# image runs workers on other machines (see docs/operations.md). constraints.txt pins the
# versions CI tested.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    CHORDLOAD_CONFIG=/etc/chordload/chordload.yaml

WORKDIR /app
COPY . /app
RUN pip install -c /app/constraints.txt "/app[ui]" \
    && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin chordload \
    && mkdir -p /var/lib/chordload /etc/chordload \
    && chown chordload /var/lib/chordload

# /app is the working directory so that Flower finds /app/flowerconfig.py.
USER chordload
CMD ["chordload", "--help"]
