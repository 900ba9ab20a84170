"""Per-user state of the explorer app: lanes of decoding, the round cursor, the guided tour.

Scope: the playback state machine over rounds (``Explorer``: step forward, back, seek, play
ticks with fractional carry) and the content of the guided tour. A lane is one decoding
variant shown side by side (DSpark, the DFlash ablation, plain decoding) or a replayed trace.
Everything here is pure except ``extend_live``, which asks each live lane's ``SpecSession``
for one more round — the caller holds the shared model lock around it. No Gradio, no
figures (``viz.panels`` renders a state).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from dspark_viz.decoding.trace import Trace


@dataclass
class Lane:
    """One decoding variant: a live ``SpecSession`` (or None in replay) and its trace so far."""

    name: str  # "dspark" | "dflash" | "plain" | "replay"
    label: str  # shown on screen (drafter label, honest about untrained drafters)
    trace: Trace
    session: object | None = None

    @property
    def live(self) -> bool:
        return self.session is not None

    @property
    def done(self) -> bool:
        return self.session is None or bool(getattr(self.session, "done", True))

    def refresh(self) -> None:
        if self.session is not None:
            self.trace = self.session.trace()


@dataclass
class Explorer:
    """Lanes plus a cursor: ``cursor`` = number of rounds shown (0 = just after prefill)."""

    lanes: list[Lane]
    cursor: int = 0
    source: str = "live"  # "live" | "replay"
    settings: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    carry: float = 0.0  # fractional rounds owed by play ticks
    playing: bool = False
    big: bool = False  # presentation mode
    history: bool = False  # text panel: every round's drafts inline instead of the clean output
    export_dir: str | None = None  # this session's latest export folder (the app deletes the previous)

    @property
    def main(self) -> Lane:
        return self.lanes[0]

    @property
    def total_rounds(self) -> int:
        return max(len(l.trace.rounds) for l in self.lanes)

    @property
    def extendable(self) -> bool:
        return any(not l.done for l in self.lanes)

    @property
    def at_end(self) -> bool:
        return self.cursor >= self.total_rounds and not self.extendable

    def upto(self, lane: Lane) -> int:
        """Rounds of ``lane`` shown at the current cursor."""
        return min(self.cursor, len(lane.trace.rounds))

    # ------------------------------------------------------------------ transitions
    def back(self, n: int = 1) -> "Explorer":
        self.cursor = max(0, self.cursor - max(0, n))
        return self

    def seek(self, i: int) -> "Explorer":
        self.cursor = max(0, min(int(i), self.total_rounds))
        return self

    def forward(self, n: int = 1, extend: Callable[["Explorer"], bool] | None = None) -> int:
        """Move ``n`` rounds forward, computing new rounds with ``extend`` when needed.

        Returns how many rounds the cursor moved. ``extend`` runs one more round in every
        unfinished lane and returns False when nothing could be computed.
        """
        moved = 0
        for _ in range(max(0, n)):
            if self.cursor < self.total_rounds:
                self.cursor += 1
            elif self.extendable and extend is not None and extend(self):
                self.cursor = min(self.cursor + 1, self.total_rounds)
            else:
                break
            moved += 1
        return moved

    def tick_rounds(self, speed: float, dt: float) -> int:
        """Whole rounds owed by one play tick of ``dt`` seconds at ``speed`` rounds/s."""
        self.carry += max(0.0, float(speed)) * max(0.0, float(dt))
        n = int(self.carry)
        self.carry -= n
        return n


def extend_live(ex: Explorer) -> bool:
    """One more round in every unfinished live lane (call under the model lock)."""
    stepped = False
    for lane in ex.lanes:
        if lane.session is not None and not lane.session.done:
            lane.session.step()
            lane.refresh()
            stepped = True
    return stepped


TOUR: list[tuple[str, str]] = [
    ("Welcome", "DSpark drafts a block of γ tokens in one parallel pass, corrects it left to right "
                "with a small Markov head, predicts how likely each token is to survive, lets a "
                "scheduler decide how many to verify (ℓ), and has the target check them in one pass. "
                "Press **Step** to run one round; every panel below shows that round."),
    ("Text", "The text panel colors every token by its fate: green = accepted draft, red struck = "
             "rejected draft, orange = the target's correction, blue = bonus token (all verified "
             "drafts accepted), grey dashed = dropped by the scheduler (never verified)."),
    ("Draft block", "Top: the backbone's candidates per position (parallel, no left context inside "
                    "the block). Middle: the Markov bias from the previously sampled token — what it "
                    "boosts and suppresses. Bottom: the corrected candidates x_k is drawn from. ★ marks "
                    "positions where the Markov head changed the top choice."),
    ("Confidence", "c_k is the predicted probability that x_k survives given the prefix survived; "
                   "a_k = Π c_i is the probability the whole prefix survives. Calibration (STS) rescales "
                   "c_k per position. The shaded area is the chosen ℓ."),
    ("Scheduler", "With R concurrent requests, candidates are admitted by descending a_k while the "
                  "expected throughput Θ = τ*·SPS(B) improves; it stops at the first non-improvement, "
                  "which keeps decoding lossless. Raise R to see the budget shrink."),
    ("Verification", "The target scores the anchor and ℓ drafts in one pass. x_k is accepted with "
                     "probability min(1, p_t/p_d) (at T = 0: iff it is the target's argmax); the first "
                     "rejection is replaced by a sample from the residual, else a bonus token is added."),
    ("Metrics", "τ = accepted draft tokens + 1 target token per round. Turn on comparison mode to run "
                "DSpark, the DFlash ablation (no Markov head) and plain decoding side by side."),
]


def tour_markdown(step: int) -> str:
    if step < 0 or step >= len(TOUR):
        return ""
    title, body = TOUR[step]
    return f"**Tour {step + 1}/{len(TOUR)} — {title}.** {body}"


__all__ = ["Lane", "Explorer", "extend_live", "TOUR", "tour_markdown"]
