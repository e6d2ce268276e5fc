# One image for every role: migrate, workers, beat, flower.
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 LOG_FORMAT=json
WORKDIR /app
COPY pyproject.toml constraints.txt README.md ./
COPY worker ./worker
COPY tasks ./tasks
COPY ops ./ops
COPY config ./config
RUN pip install --no-cache-dir -c constraints.txt . && useradd --system --uid 10001 opsfleet
USER opsfleet
ENV OPSFLEET_CONFIG_DIR=/app/config
CMD ["celery", "-A", "worker", "worker", "-Q", "checks,notify", "-l", "INFO"]
