# scoreline's services (router, workers, shadow workers, comparator) as one image;
# docker-compose.yml runs one role per container.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app

COPY pyproject.toml README.md ./
COPY schemas ./schemas
COPY routing ./routing
COPY workflows ./workflows
COPY streams ./streams
COPY scoreline ./scoreline
RUN pip install .

# The example rules, models and facts ship inside the package; point at your own with
# SCORELINE_RULES, SCORELINE_MODELS_DIR and SCORELINE_FACTS_DIR (or --rules, --models-dir, --facts-dir).
USER nobody
ENTRYPOINT ["scoreline"]
CMD ["run"]
