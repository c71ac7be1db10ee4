"""What ops watch: volume, outcomes, ratings (thumbs and CSAT), latency, and the questions the knowledge base lacks."""

from __future__ import annotations

from dataclasses import dataclass, field

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
    # Customers' 1-5 ratings of closed conversations (CSAT): {day, average, count} per day, and {average, count} by
    # outcome: "bot" (answered by the bot alone) and "handed_off" (a person took part).
    csat_per_day: list[dict] = field(default_factory=list)
    csat_by_outcome: dict[str, dict] = field(default_factory=dict)
    csat_average: float | None = None
    csat_count: int = 0

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
    csat = log.csat_ratings(days)
    days_rated = sorted({r["day"] for r in csat})
    return Analytics(log.daily_conversations(days), log.status_counts(), ratings["up"], ratings["down"], p50, p95,
                     log.unanswered_questions(),
                     csat_per_day=[{"day": day, **_mean([r["score"] for r in csat if r["day"] == day])} for day in days_rated],
                     csat_by_outcome={o: _mean([r["score"] for r in csat if r["outcome"] == o]) for o in CSAT_OUTCOMES},
                     csat_average=_mean([r["score"] for r in csat])["average"], csat_count=len(csat))


CSAT_OUTCOMES = ("bot", "handed_off")


def _mean(scores: list[int]) -> dict:
    return {"average": round(sum(scores) / len(scores), 2) if scores else None, "count": len(scores)}
