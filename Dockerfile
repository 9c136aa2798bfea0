# syntax=docker/dockerfile:1
# braze-trigger-consumer: build wheels in one stage, install them into a clean slim image.
# scripts/check-dockerfile lints this file and replays its pip steps without Docker.

FROM python:3.11-slim AS build
WORKDIR /src
# Only what the wheel needs (see .dockerignore), so editing tests or k8s/ does not rebuild.
COPY pyproject.toml README.md ./
COPY consumer ./consumer
# The package and every dependency as wheels; the runtime stage installs offline from them.
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# A fixed numeric uid, so the pod's runAsNonRoot can verify it (k8s/base/deployment.yaml).
RUN groupadd --system --gid 10001 consumer \
    && useradd --system --uid 10001 --gid consumer --no-create-home --shell /usr/sbin/nologin consumer
# Bind-mounted, not copied: the wheels never become a layer of the final image.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels /wheels/braze_trigger_consumer-*.whl
USER 10001:10001
EXPOSE 9464
ENTRYPOINT ["braze-consumer"]
CMD ["run", "--config", "/etc/braze-consumer/consumer.yaml"]
