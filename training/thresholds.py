"""The hand-off threshold learned from outcomes: where people said the bot's decision was wrong.

Agents' actions and customers' ratings label the bot's decisions at the retrieval confidence it had: a
low-confidence hand-off whose suggested reply the agent sent as is did not need a person; one the agent rewrote
or replaced did. A confident reply the agent rejected or the customer rated down should have gone to a person;
one approved or rated up should not. `refit` picks, among the thresholds whose hand-offs hold
`learn.handoff_precision` (that share of them needed a person) on the older outcomes, the one with the most
right decisions there, and applies it only when the newest outcomes, held out, agree: its hand-off precision
within `gate.tolerance` of the target and no fewer right decisions than the current threshold, and only with
`learn.apply_handoff_refit` on (off by default: on the feedback-loop bench the threshold it found resolved fewer
questions; the report shows the proposal either way).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from chatbot import Config, ConversationLog, save_settings

HELD_OUT = 0.3  # the newest share of outcomes, kept to check the new threshold on


@dataclass
class Outcome:
    confidence: float
    needed_person: bool


@dataclass
class Refit:
    current: float
    proposed: float | None = None
    applied: bool = False
    outcomes: int = 0
    precision: float | None = None  # held-out hand-off precision at the proposed threshold
    right: float | None = None  # held-out share of right decisions at the proposed threshold
    right_before: float | None = None  # the same at the current threshold
    why: str = ""

    def to_json(self) -> dict:
        return asdict(self)


def outcomes(log: ConversationLog) -> list[Outcome]:
    """Each labelled decision, oldest first; an agent's edit of an answered reply says neither way and is left out."""
    labelled = []
    for row in log.decision_outcomes():
        handed_off, outcome = bool(row["handed_off"]), row["outcome"]
        if handed_off:
            labelled.append(Outcome(row["confidence"], outcome != "approved"))
        elif outcome != "edited":
            labelled.append(Outcome(row["confidence"], outcome in ("rejected", "down")))
    return labelled


def precision(items: list[Outcome], threshold: float) -> float | None:
    """The share of the hand-offs at `threshold` that needed a person; None with no hand-off."""
    handed = [o.needed_person for o in items if o.confidence < threshold]
    return sum(handed) / len(handed) if handed else None


def right(items: list[Outcome], threshold: float) -> float:
    """The share of decisions at `threshold` that were right: hand off what needed a person, answer the rest."""
    return sum((o.confidence < threshold) == o.needed_person for o in items) / len(items)


def refit(config: Config, log: ConversationLog) -> Refit:
    current = config.answer.handoff_confidence
    items = outcomes(log)
    result = Refit(current, outcomes=len(items))
    if len(items) < config.learn.min_outcomes:
        result.why = f"{len(items)} labelled decisions, fewer than learn.min_outcomes ({config.learn.min_outcomes})"
        return result
    cut = int(len(items) * (1 - HELD_OUT))
    fit, held = items[:cut], items[cut:]
    target = config.learn.handoff_precision
    candidates = sorted({round(o.confidence + 1e-4, 4) for o in fit} | {current})
    holding = [t for t in candidates if (precision(fit, t) or 0.0) >= target]
    if not holding:
        result.why = f"no threshold holds hand-off precision {target} on the outcomes"
        return result
    result.proposed = max(holding, key=lambda t: (right(fit, t), -t))  # the most right decisions; of equals, fewest hand-offs
    result.precision = precision(held, result.proposed)
    result.right, result.right_before = round(right(held, result.proposed), 4), round(right(held, current), 4)
    tolerance = config.gate.tolerance
    if result.precision is not None and result.precision < target - tolerance:
        result.why = f"held-out hand-off precision {result.precision:.2f} is below {target}"
    elif result.right < result.right_before - tolerance:
        result.why = f"held-out right decisions {result.right:.2f} against {result.right_before:.2f} now"
    elif result.proposed == current:
        result.why = "the current threshold is the one the outcomes ask for"
    elif not config.learn.apply_handoff_refit:
        result.why = "proposed only: learn.apply_handoff_refit is off"
    else:
        save_settings(config, {"answer.handoff_confidence": result.proposed})
        result.applied = True
    if result.precision is not None:
        result.precision = round(result.precision, 4)
    return result
