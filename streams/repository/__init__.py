"""The model repository on Kafka: packages published in chunks on a compacted topic, pulled and verified by workers."""

from streams.repository.records import Head
from streams.repository.repository import (
                                           DEFAULT_MAX_PACKAGE_BYTES,
                                           ModelConflict,
                                           ModelRepository,
                                           Published,
                                           RepositoryError,
)

__all__ = ["DEFAULT_MAX_PACKAGE_BYTES", "Head", "ModelConflict", "ModelRepository", "Published", "RepositoryError"]
