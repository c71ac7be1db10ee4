"""What ops watch: volume, outcomes, ratings, latency, and the questions the knowledge base lacks."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .log import ConversationLog


@dataclass
class Analytics:
    per_day: list[dict]  # {day, conversations}
    statuses: dict[str, int]  # open / handed_off / resolved
    thumbs_up: int
    thumbs_down: int
    latency_ms_p50: float
    latency_ms_p95: float
    gaps: list[dict]  # {question, times, last_asked}

    @property
    def thumbs_up_rate(self) -> float | None:
        rated = self.thumbs_up + self.thumbs_down
        return self.thumbs_up / rated if rated else None

    def shares(self) -> dict[str, float]:
        total = sum(self.statuses.values())
        return {k: (v / total if total else 0.0) for k, v in self.statuses.items()}


def analytics(log: ConversationLog, days: int = 30) -> Analytics:
    ratings = log.rating_counts()
    latencies = log.bot_latencies()
    p50, p95 = (np.percentile(latencies, [50, 95]).round(1).tolist() if latencies else (0.0, 0.0))
    return Analytics(log.daily_conversations(days), log.status_counts(), ratings["up"], ratings["down"], p50, p95,
                     log.unanswered_questions())
