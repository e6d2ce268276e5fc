# One image for every role: migrate, workers, beat, flower.
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 LOG_FORMAT=json
WORKDIR /app
COPY pyproject.toml constraints.txt README.md ./
COPY worker ./worker
COPY tasks ./tasks
COPY ops ./ops
COPY config ./config
# the packs opsfleet ships, where a config folder mounted over /app/config cannot hide them
COPY config /opt/opsfleet/packs
RUN pip install --no-cache-dir -c constraints.txt . && useradd --system --uid 10001 opsfleet
USER opsfleet
ENV OPSFLEET_CONFIG_DIR=/app/config OPSFLEET_PACKS_DIR=/opt/opsfleet/packs
CMD ["celery", "-A", "worker", "worker", "-Q", "checks,notify", "-l", "INFO"]
