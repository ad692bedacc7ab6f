"""The Kafka edge of scoreline: services, the client library, topics and the local broker.

Producer services need only the client library::

    from streams import ScoreClient
"""

from streams.client.score_client import ClientClosed, ScoreClient, ScoreTimeout

__all__ = ["ClientClosed", "ScoreClient", "ScoreTimeout"]
