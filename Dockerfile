# order-archiver: `watch` by default; `batch --run` for a CronJob.
#   docker build -t order-archiver .
#   docker run --rm -e MONGODB_URI=... order-archiver                 (watch)
#   docker run --rm -e MONGODB_URI=... order-archiver batch --run     (batch)
# The URI comes from the environment at run time (a Secret): never baked into the image.
# Two targets: the default (the last stage, `production`) installs the production set only;
# `--target simulation` adds Faker and mongomock (requirements-simulation.txt) for compose's
# `simulate` service and demos: never for production data.
# The base pinned by digest: a moved tag cannot change the image. To move to a newer base:
#   docker buildx imagetools inspect python:3.11-slim   (the "Digest:" line)
FROM python:3.11-slim@sha256:9c900dea9e8fb7e16277c179b555cc72d29a352dbc33cff48ad5a0412fd5bfc7 AS base

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    LOG_DIR="" \
    LOG_FORMAT=json \
    RESUME_TOKEN_FILE=/data/resume_token.json

WORKDIR /app
# The production set only (no Faker, no mongomock: --simulation says so), every file checked
# against its hash, no dependency pip would pick by itself.
COPY requirements.txt .
RUN pip install --require-hashes --no-deps -r requirements.txt

# The product: the top-level modules, each named (a stray script in the checkout stays out;
# tests/unit/test_deploy_files.py fails when a product module is missing here), and the
# order_archiver package. .dockerignore keeps out what is not the product (teststand/, demo.py,
# tests/, bench/, the .env files).
COPY main.py simulate.py archiver.py watcher.py config.py logger.py generator.py ./
COPY order_archiver/ ./order_archiver/

# An unprivileged user; /data holds the file token store when that store is used.
RUN groupadd --system --gid 10001 archiver \
 && useradd --system --uid 10001 --gid archiver --home-dir /app --shell /usr/sbin/nologin archiver \
 && mkdir /data && chown archiver:archiver /data

# `simulate` (compose's service): the production image plus the simulation set, hashed too
# (it holds the production set: pip finds those installed already).
FROM base AS simulation
COPY requirements-simulation.txt .
RUN pip install --require-hashes --no-deps -r requirements-simulation.txt
USER 10001:10001
ENTRYPOINT ["python", "main.py"]

# The production image: the default target, and the last stage (`docker build .` builds it).
FROM base AS production
USER 10001:10001

EXPOSE 9108
ENTRYPOINT ["python", "main.py"]
# Metrics on every interface of the container (the default is 127.0.0.1, this host only):
# publish 9108 only where Prometheus scrapes.
CMD ["watch", "--token-store", "mongo", "--metrics-port", "9108", "--metrics-address", "0.0.0.0"]
