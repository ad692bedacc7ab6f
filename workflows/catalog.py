"""The workflows a manifest may name, by name."""

from __future__ import annotations

from workflows.base import Workflow
from workflows.fraud_score import FraudScore
from workflows.title_ranking import TitleRanking

__all__ = ["WORKFLOWS"]

WORKFLOWS: dict[str, type[Workflow]] = {
    TitleRanking.name: TitleRanking,
    FraudScore.name: FraudScore,
}
"Workflow classes by the name a manifest's ``workflow`` field uses."
