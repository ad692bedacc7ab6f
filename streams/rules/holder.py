"""Where a running process gets its routing rules: the snapshot in force, swapped atomically."""

from __future__ import annotations

import logging

from routing import Rules

__all__ = ["RulesHolder"]

log = logging.getLogger(__name__)


class RulesHolder:
    """Holds the rules snapshot in force; readers call it once per batch.

    Swapping is a single attribute assignment, so a batch routed under one version is never
    split across two. A rejected update keeps the last good version: whoever feeds the
    holder (``streams.rules.publisher.RulesWatcher``) validates before calling :meth:`replace`.
    """

    __slots__ = ("_rules", "source")

    def __init__(self, rules: Rules, source: str = "local rules") -> None:
        self._rules = rules
        self.source = source
        "Where the rules in force came from (a file, or the rules topic), for logs."

    def __call__(self) -> Rules:
        return self._rules

    @property
    def version(self) -> int:
        """The version in force."""
        return self._rules.version

    def replace(self, rules: Rules, *, source: str | None = None) -> None:
        """Put ``rules`` in force; ``source`` says where they came from."""
        if source is not None:
            self.source = source
        if rules.version != self._rules.version:
            log.info("routing rules version %s in force (was %s), from %s", rules.version, self._rules.version,
                     self.source)
        self._rules = rules
