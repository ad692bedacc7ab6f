"""Helpers the stream tests share (a module of its own: ``conftest`` is not importable by name)."""

from __future__ import annotations

import orjson

from routing import parse_rules
from scoreline.settings import EXAMPLES_DIR
from streams.topics import TopicLayout


def rules_under(layout: TopicLayout, name: str = "rules.json"):
    """A shipped rules file with its reply topics moved under the test's prefix."""
    text = (EXAMPLES_DIR / name).read_text().replace('"scoreline.replies.', f'"{layout.prefix}replies.')
    return parse_rules(orjson.loads(text))
