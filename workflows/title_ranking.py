"""The ``title_ranking`` workflow: a two-tower ranker with a country prior.

For a user and a list of candidate titles it computes, per title::

    logit = user_tower(user_embedding) · title_embedding[t]
            + country_bias[country, t] (+ device_bias[device, t])
    score = sigmoid(logit)

drops titles not available in the user's country, and returns the top ``k``
(payload ``k``, default ``params.k_default``)::

    {"ranking": [{"title": "t-2", "score": 0.91}, ...], "unknown_titles": ["t-x"]}

Facts: ``user_embedding`` (keyed by user id; an unknown user gets the zero
embedding, i.e. the population mean, and is counted) and
``title_availability`` (keyed by title id, one 0/1 column per country).

Weights: ``title_ids``, ``title_embedding``, ``countries``, ``country_bias``
and the user tower: ``user_projection`` alone (``params.user_tower ==
"linear"``) or ``user_hidden``, ``user_hidden_bias``, ``user_projection``
(``"mlp"``, ReLU); with ``params.device_prior`` also ``devices`` and
``device_bias``.

A batch is scored in one pass: the ragged title lists are concatenated into
flat arrays with a segment id per title (which item it belongs to), scored
flat, and ranked through one padded ``(items x longest list)`` matrix.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import Any, ClassVar, cast

import numpy as np

from workflows.base import Item, Outcome, Workflow, check_user_request, invalid
from workflows.errors import ModelPackageError
from workflows.facts import FactBatch

__all__ = ["TitleRanking"]

_TITLES_NOT_STRINGS = invalid("payload.titles", "payload.titles must be a list of title id strings")


@dataclass(frozen=True, slots=True)
class _Batch:
    """A preprocessed batch: the valid items, their titles flattened."""

    size: int
    errors: dict[int, Outcome]  # input position -> invalid_payload outcome
    rows: np.ndarray  # input position of each valid item
    user_ids: list[str]
    country: np.ndarray  # country index per valid item, -1 when unknown
    device: np.ndarray  # device index per valid item, -1 when unknown
    k: np.ndarray
    seg: np.ndarray  # per known title: which valid item it belongs to
    title: np.ndarray  # per known title: its index in the catalogue
    distinct: np.ndarray  # the batch's catalogue titles, sorted, each once
    slot: np.ndarray  # per known title: its position in ``distinct``
    unknown: list[list[str]]  # per valid item: titles not in the catalogue


@dataclass(frozen=True, slots=True)
class _Features:
    user: np.ndarray  # (items, embedding width)
    country: np.ndarray
    device: np.ndarray
    seg: np.ndarray
    title: np.ndarray
    available: np.ndarray  # per known title


class TitleRanking(Workflow):
    """Rank candidate titles for a user (objective ``title-ranking``)."""

    name: ClassVar[str] = "title_ranking"
    facts: ClassVar[tuple[str, ...]] = ("user_embedding", "title_availability")

    def __init__(self, weights: Mapping[str, np.ndarray], params: Mapping[str, Any]) -> None:
        super().__init__(weights, params)
        title_ids, self.title_embedding, countries, self.country_bias, self.user_projection = self.require(
            "title_ids", "title_embedding", "countries", "country_bias", "user_projection"
        )
        self.title_ids = [str(t) for t in title_ids]
        self.title_index = {t: i for i, t in enumerate(self.title_ids)}
        self._title_names = np.array(self.title_ids, dtype=object)  # catalogue row -> id, for numpy indexing
        self.country_index = {str(c): i for i, c in enumerate(countries)}
        # An unknown country gets the average prior: the best guess with no information.
        self.country_bias = np.vstack([self.country_bias, self.country_bias.mean(axis=0)])
        self.user_tower = str(self.params.get("user_tower", "linear"))
        if self.user_tower == "mlp":
            self.user_hidden, self.user_hidden_bias = self.require("user_hidden", "user_hidden_bias")
        elif self.user_tower != "linear":
            raise ModelPackageError(f"title_ranking: params.user_tower {self.user_tower!r} is not 'linear' or 'mlp'")
        self.device_index: dict[str, int] = {}
        if self.params.get("device_prior", False):
            devices, device_bias = self.require("devices", "device_bias")
            self.device_index = {str(d): i for i, d in enumerate(devices)}
            self.device_bias = np.vstack([device_bias, device_bias.mean(axis=0)])
        self.k_default = int(self.params.get("k_default", 10))
        self.k_max = int(self.params.get("k_max", 100))
        self.max_titles = int(self.params.get("max_titles", 1000))

    # -- stages -------------------------------------------------------------

    def preprocess(self, items: Sequence[Item]) -> _Batch:
        """Validate each item, resolve title ids to catalogue rows, flatten the batch."""
        errors: dict[int, Outcome] = {}
        rows: list[int] = []
        user_ids: list[str] = []
        country: list[int] = []
        device: list[int] = []
        ks: list[int] = []
        counts: list[int] = []  # known titles per valid item
        title: list[int] = []
        unknown: list[list[str]] = []
        for pos, item in enumerate(items):
            problem, found, missing = self._resolve(item)
            if problem is not None:
                errors[pos] = problem
                continue
            context, payload = item.context, item.payload
            rows.append(pos)
            user_ids.append(context["user_id"])
            country.append(self._code(self.country_index, context.get("country")))
            device.append(self._code(self.device_index, context.get("device")))
            ks.append(payload.get("k", self.k_default))
            counts.append(len(found))
            title.extend(found)
            unknown.append(missing)
        flat = np.fromiter(title, dtype=np.int64, count=len(title))
        distinct, slot = np.unique(flat, return_inverse=True)  # once for fact_keys and features both
        return _Batch(
            size=len(items),
            errors=errors,
            rows=np.asarray(rows, dtype=np.int64),
            user_ids=user_ids,
            country=np.asarray(country, dtype=np.int64),
            device=np.asarray(device, dtype=np.int64),
            k=np.asarray(ks, dtype=np.int64),
            # Which item each title belongs to, in one numpy call rather than a list entry per title.
            seg=np.repeat(np.arange(len(rows), dtype=np.int64), counts),
            title=flat,
            distinct=distinct,
            slot=slot.reshape(-1),
            unknown=unknown,
        )

    @staticmethod
    def _code(vocabulary: Mapping[str, int], value: Any) -> int:
        return vocabulary.get(value, -1) if isinstance(value, str) else -1

    def _resolve(self, item: Item) -> tuple[Outcome | None, list[int], list[str]]:
        """Check the item; resolve its titles to catalogue rows (each once, at its first mention) and unknown ids.

        The common case, every title known and none repeated, costs one lookup pass and one set:
        the catalogue holds only strings, so a title it knows is a string, and the per-title type
        check runs only when some title is unknown or repeated.
        """
        if (problem := check_user_request(item)) is not None:
            return problem, [], []
        payload = item.payload
        titles = payload.get("titles")
        if titles is None:
            return invalid("payload.titles", "payload.titles is required: a list of title ids"), [], []
        if not isinstance(titles, (list, tuple)):
            return _TITLES_NOT_STRINGS, [], []
        if len(titles) > self.max_titles:  # before any lookup: a huge list costs no more than its length
            if not all(map(isinstance, titles, repeat(str))):
                return _TITLES_NOT_STRINGS, [], []
            return invalid("payload.titles", f"payload.titles has {len(titles)} ids; at most {self.max_titles}"), [], []
        try:
            found = list(map(self.title_index.get, titles))  # resolved in one C-level pass; None where unknown
        except TypeError:  # an unhashable title (a list or an object)
            return _TITLES_NOT_STRINGS, [], []
        missing: list[str] = []
        distinct = set(found)
        if len(distinct) != len(found) or None in distinct:
            if not all(map(isinstance, titles, repeat(str))):
                return _TITLES_NOT_STRINGS, [], []
            first = dict.fromkeys(titles)  # a title is ranked once, at its first mention
            found = list(map(self.title_index.get, first))
            if None in found:
                missing = [t for t, i in zip(first, found) if i is None]
                found = [i for i in found if i is not None]
        k = payload.get("k", self.k_default)
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= self.k_max:
            return invalid("payload.k", f"payload.k must be an integer from 1 to {self.k_max}"), [], []
        # No None is left in found: an unknown title (None) sends it through the branch that drops them.
        return None, cast("list[int]", found), missing

    def fact_keys(self, pre: _Batch) -> Mapping[str, Sequence[str]]:
        """Users once per item; titles once per distinct catalogue title in the batch."""
        return {
            "user_embedding": pre.user_ids,
            "title_availability": self._title_names[pre.distinct].tolist(),
        }

    def features(self, pre: _Batch, facts: Mapping[str, FactBatch]) -> _Features:
        """User vectors per item and an availability flag per (item, title)."""
        if len(pre.title):
            availability = facts["title_availability"].values[pre.slot]
            country = pre.country[pre.seg]
            known = country >= 0
            in_country = availability[np.arange(len(country)), np.where(known, country, 0)]
            # With no known country only titles available everywhere are safe to show.
            available = (in_country if known.all() else np.where(known, in_country, availability.min(axis=1))) > 0.5
        else:
            available = np.zeros(0, dtype=bool)
        return _Features(
            user=facts["user_embedding"].values,
            country=pre.country,
            device=pre.device,
            seg=pre.seg,
            title=pre.title,
            available=available,
        )

    def predict(self, features: _Features) -> np.ndarray:
        """One score per flattened (item, title); NaN where availability drops the title."""
        user = features.user
        if self.user_tower == "mlp":
            user = np.maximum(user @ self.user_hidden + self.user_hidden_bias, 0.0)
        user = user @ self.user_projection  # (items, d)
        seg, title = features.seg, features.title
        logit = np.einsum("fd,fd->f", user[seg], self.title_embedding[title])
        logit += self.country_bias[features.country[seg], title]  # -1 selects the appended mean row
        if self.device_index:
            logit += self.device_bias[features.device[seg], title]
        score = 1.0 / (1.0 + np.exp(-logit))
        return np.where(features.available, score, np.nan)

    def postprocess(self, pre: _Batch, scores: np.ndarray) -> list[Outcome]:
        """Top-k per item through one padded score matrix; invalid items keep their errors."""
        n = len(pre.rows)
        counts = np.bincount(pre.seg, minlength=n) if n else np.zeros(0, dtype=np.int64)
        width = int(counts.max()) if n and len(pre.seg) else 0
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]]) if n else np.zeros(0, dtype=np.int64)
        pos = np.arange(len(pre.seg)) - starts[pre.seg] if len(pre.seg) else np.zeros(0, dtype=np.int64)
        padded = np.full((n, width), -np.inf)
        padded[pre.seg, pos] = np.where(np.isnan(scores), -np.inf, scores)
        titles = np.full((n, width), -1, dtype=np.int64)
        titles[pre.seg, pos] = pre.title
        # Stable sort on the negated scores: ties keep the client's order.
        order = np.argsort(-padded, axis=1, kind="stable")
        ranked_scores = np.take_along_axis(padded, order, axis=1)
        ranked_titles = np.take_along_axis(titles, order, axis=1)
        kept = np.isfinite(ranked_scores).sum(axis=1)

        outcomes: list[Outcome | None] = [None] * pre.size
        for pos_, outcome in pre.errors.items():
            outcomes[pos_] = outcome
        # Only the top of each row leaves numpy, as Python lists of ids and scores, in one conversion each.
        top = np.minimum(pre.k, kept)
        cut = int(top.max()) if n else 0
        all_titles = self._title_names[ranked_titles[:, :cut]].tolist()  # padding (-1) is cut off below
        all_scores = ranked_scores[:, :cut].tolist()
        for row, k, titles_, scores_, unknown in zip(pre.rows.tolist(), top.tolist(), all_titles, all_scores,
                                                     pre.unknown):
            if k < cut:
                titles_, scores_ = titles_[:k], scores_[:k]
            ranking = [{"title": t, "score": s} for t, s in zip(titles_, scores_)]
            outcomes[row] = Outcome({"ranking": ranking, "unknown_titles": unknown}, None)
        return outcomes  # type: ignore[return-value]
