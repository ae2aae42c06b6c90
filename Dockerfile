# The Mesh NanoLLM server image: one Granian process serving HTTP and Socket.IO on port 8080.
# The same image runs a headless worker (`mesh-nanollm worker`, on the CPU build of onnxruntime:
# the `cpu` extra; docs/worker.md).
# Build: docker build -t mesh-nanollm .   Deploy: see docs/deploy.md (fly.io).
FROM python:3.11-slim

COPY --from=ghcr.io/astral-sh/uv:0.13.9 /uv /bin/

# Use the image's Python (never download one), byte-compile at build time so start-up is quick,
# and keep uv's download cache out of the image.
ENV UV_PYTHON_DOWNLOADS=never \
    UV_COMPILE_BYTECODE=1 \
    UV_NO_CACHE=1 \
    UV_PROJECT_ENVIRONMENT=/app/.venv

WORKDIR /app

# Dependencies first, in their own layer: it is rebuilt only when the lock file changes.
COPY pyproject.toml uv.lock ./
RUN uv sync --frozen --no-dev --extra cpu --no-install-project

# The project itself. It stays an editable install on purpose: the app finds templates/,
# static/, models/, catalogue.json and piccolo_migrations/ next to src/, i.e. under /app.
COPY README.md ./
COPY src ./src
RUN uv sync --frozen --no-dev --extra cpu
COPY catalogue.json ./
COPY piccolo_migrations ./piccolo_migrations
# uv compiles site-packages only; the server cannot write __pycache__ here at run time.
RUN /app/.venv/bin/python -m compileall -q src piccolo_migrations
COPY templates ./templates
COPY static ./static
COPY models ./models

# The code stays root-owned and read-only to the server; /data is the only writable place
# (the working directory, so a SQLite database without DATABASE_URL lands there).
RUN useradd --system --uid 10001 --home-dir /data --create-home mesh
USER mesh
WORKDIR /data

ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    MESH_ENV=production \
    HOST=0.0.0.0 \
    PORT=8080
EXPOSE 8080

# Migrations run once per deploy (fly's release_command: `mesh-nanollm migrate`), not in every
# instance; for a single container on SQLite use `mesh-nanollm serve`, which migrates first.
CMD ["mesh-nanollm", "--no-migrate"]
