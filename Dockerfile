FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 LOG_FORMAT=json
WORKDIR /app
COPY pyproject.toml README.md ./
COPY worker ./worker
COPY migrations ./migrations
RUN pip install --no-cache-dir -e . && useradd --create-home --uid 10001 cos
USER cos
CMD ["arq", "worker.main.WorkerSettings"]
