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
COPY examples ./examples
RUN pip install .

# The shipped example rules and models; mount your own over /app/examples or pass --rules.
ENV SCORELINE_MODELS_DIR=/app/examples/models SCORELINE_FACTS_DIR=/app/examples/facts \
    SCORELINE_RULES=/app/examples/rules.json
USER nobody
ENTRYPOINT ["scoreline"]
CMD ["run"]
