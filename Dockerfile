# One image for every Django process of compose.yaml: migrate, web (gunicorn), workers, beat,
# Flower. The command is chosen per service; the default is web.
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PROJECT_ENVIRONMENT=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# uv from PyPI, pinned: the same resolver as `make install`.
RUN pip install --no-cache-dir "uv==0.9.5"

WORKDIR /app

# Dependencies first (exactly uv.lock; no dev tools, no embedded servers: compose runs real
# ones), so code changes reuse this layer.
COPY pyproject.toml uv.lock ./
RUN uv sync --frozen --no-default-groups --no-install-project

COPY . .

# Non-root, with a home of its own. Only var/ (static files) is writable; the code is not.
# collectstatic at build time makes the image serve its own static files (WhiteNoise); the
# migrate service runs it again into the shared `static` volume after an upgrade.
RUN useradd --system --create-home --uid 10001 --user-group jobsite \
    && mkdir -p /app/var/static \
    && DEBUG=0 SECRET_KEY=collectstatic-at-build-time-only ALLOWED_HOSTS=localhost \
       python manage.py collectstatic --noinput --verbosity 0 \
    && chown -R jobsite:jobsite /app/var

USER jobsite

EXPOSE 8000 5555

CMD ["gunicorn", "jobsite.wsgi", "--bind=0.0.0.0:8000", "--workers=3", "--access-logfile=-"]
