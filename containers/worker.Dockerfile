# The image of the service's processes: `exporter serve` (the API) and `exporter worker` (a Celery
# worker of the fleet) run from it. Built from the top of the checkout:
#   docker build -f containers/worker.Dockerfile -t automl-export-engine .
# The same Python as the lock file is resolved for (3.11), the packages requirements.lock pins, and
# the Debian packages that exports need: bubblewrap and libseccomp (the export sandbox), Node.js
# and Chromium (tf_js verification).
FROM python:3.11-slim-bookworm

RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        bubblewrap libseccomp2 nodejs npm chromium \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/exporter
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund --loglevel=error
COPY requirements.lock ./
RUN pip install --no-cache-dir --disable-pip-version-check -r requirements.lock
COPY pyproject.toml README.md ./
COPY exporter exporter
COPY converters converters
COPY containers containers
RUN pip install --no-cache-dir --disable-pip-version-check --no-deps .

ENV EXPORTER_NODE_MODULES=/opt/exporter/node_modules \
    EXPORTER_CHROMIUM=/usr/bin/chromium \
    TF_CPP_MIN_LOG_LEVEL=3 \
    TFDF_DISABLE_WELCOME_MESSAGE=1
# Exports run as an unprivileged user; the data, model and export folders are volumes it owns.
RUN useradd --uid 10001 --create-home exporter \
    && mkdir -p /srv/data /srv/models /srv/exports /srv/cache \
    && chown exporter /srv/data /srv/models /srv/exports /srv/cache
USER exporter
CMD ["exporter", "worker"]
