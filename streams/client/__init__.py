"""What producer services use: the scoring client, backfills and replays, with their rate limits and progress."""

from streams.client.backfill import BackfillOptions, backfill, check_options
from streams.client.progress import Progress
from streams.client.rate import TokenBucket, parse_rate
from streams.client.records import request_record
from streams.client.replay import ReplayFailed, parse_time, replay
from streams.client.score_client import ClientClosed, ScoreClient, ScoreTimeout, now_ms

__all__ = [
    "BackfillOptions",
    "ClientClosed",
    "Progress",
    "ReplayFailed",
    "ScoreClient",
    "ScoreTimeout",
    "TokenBucket",
    "backfill",
    "check_options",
    "now_ms",
    "parse_rate",
    "parse_time",
    "replay",
    "request_record",
]
