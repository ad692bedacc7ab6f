"""How a scoring request goes on the wire: its request topic, key, value and routing headers."""

from __future__ import annotations

from routing.route import scalar_str
from schemas import codec
from schemas import headers as H
from schemas.messages import Request, Traffic
from streams.topics import TopicLayout
from streams.transport.headers import Headers, to_headers

__all__ = ["request_record"]


def request_record(layout: TopicLayout, request: Request, *, shard_key: str | None,
                   reply_partition: int | None, own_topic: bool = False) -> tuple[str, bytes, bytes | None, Headers]:
    """The ``(topic, value, key, headers)`` that carry ``request``, as the contract wants them.

    Backfill traffic goes to the backfill request topic, everything else to the live one; with
    ``own_topic`` both are the client's own (``<prefix>requests.<client>``). The headers let the
    router route without parsing the body; they include the context fields routing rules may
    match on (``scoreline-context-country``, ``-device``, ``-surface``) where the context has them.
    """
    headers = to_headers({
        H.REQUEST_ID: request.request_id, H.OBJECTIVE: request.objective, H.CLIENT: request.client,
        H.REPLY_TO: request.reply_to, H.TRAFFIC: request.traffic, H.MODEL_OVERRIDE: request.model,
        H.SHARD_KEY: shard_key,
        H.REPLY_PARTITION: str(reply_partition) if reply_partition is not None else None,
        # The context fields rules match on, so the router need not parse the body for them either.
        **{header: scalar_str(request.context.get(field)) for field, header in H.CONTEXT_HEADERS.items()},
    })
    if own_topic:
        topic = layout.client_requests(request.client, request.traffic)
    else:
        topic = layout.requests_backfill if request.traffic == Traffic.BACKFILL else layout.requests
    key = shard_key.encode() if shard_key is not None else None
    return topic, codec.encode_request(request), key, headers
