# One image for web, worker, beat and flower; docker-compose.yml picks the command.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1

RUN useradd --create-home --uid 1000 aijobs
WORKDIR /app

COPY pyproject.toml ./
RUN pip install --upgrade pip && pip install .
COPY . .
# Settings refuse to load without a secret; collectstatic needs none of its own.
RUN DJANGO_SECRET_KEY=build-only python manage.py collectstatic --noinput

USER aijobs
EXPOSE 8000
# The ASGI app under gunicorn with uvicorn workers, as docker-compose.yml runs it (devtools/web.py).
CMD ["gunicorn", "webapp.asgi", "--bind=0.0.0.0:8000", "--worker-class=uvicorn_worker.UvicornWorker", "--no-control-socket"]
