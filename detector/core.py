"""The scoring core: the keyed steps, card -> terminal -> model, in one process.

``ScoringCore`` runs the same pure step functions the Bytewax dataflow keys by card, by
terminal and by model shard, in the same order, so that the offline replay and the
tests decide exactly as the detector does.
"""

from __future__ import annotations

from detector.cards import CardState, card_step
from detector.contracts import Control, Label, ModelStatus, RejectReason, Transaction
from detector.items import ControlApplied, Learned, ModelIn, ModelOut, Noticed, Rejected, Scored
from detector.scoring import ModelState, model_step, new_model_state
from detector.settings import ScoringSettings
from detector.shards import to_shards
from detector.status import merge_statuses, summarize
from detector.terminals import TerminalState, terminal_key, terminal_step


class ScoringCore:
    """All state in one object, for the offline replay and the tests.

    ``process`` runs an event through the same three steps the dataflow runs, in the
    same order, and returns what the dataflow would publish. A ``Control`` goes straight
    to the model step, as in the dataflow.
    """

    def __init__(self, config: ScoringSettings | None = None) -> None:
        self.config = config or ScoringSettings()
        self.cards: dict[str, CardState] = {}
        self.terminals: dict[str, TerminalState] = {}
        # the model step's shards (one unless ``config.shards`` says more)
        self.shards: list[ModelState] = [
            new_model_state(self.config) for _ in range(self.config.shards)
        ]
        self._shard_count = len(self.shards)  # read for every event

    @property
    def model(self) -> ModelState:
        """The model step's state (the first shard's, with several)."""
        return self.shards[0]

    @model.setter
    def model(self, state: ModelState) -> None:
        self.shards[0] = state

    def _model_step(self, item: ModelIn) -> list[ModelOut]:
        out: list[ModelOut] = []
        for shard, routed in to_shards(item, self._shard_count):
            self.shards[shard], shard_out = model_step(
                self.shards[shard], routed, self.config, watch=shard == 0
            )
            out.extend(shard_out)
        # Every shard applies a control message alike: one outcome says it.
        return out[:1] if isinstance(item, Control) else out

    def process(self, event: Transaction | Label | Control) -> list[ModelOut | Rejected]:
        if isinstance(event, Control):
            return list(self._model_step(event))
        card_id = event.card_id
        self.cards[card_id], card_out = card_step(self.cards.get(card_id), event, self.config)
        results: list[ModelOut | Rejected] = []
        for item in card_out:
            if isinstance(item, Rejected):
                results.append(item)
                continue
            terminal_id = terminal_key(item)
            self.terminals[terminal_id], terminal_out = terminal_step(
                self.terminals.get(terminal_id), item, self.config
            )
            for routed in terminal_out:
                if isinstance(routed, Rejected | Noticed):
                    results.append(routed)
                    continue
                results.extend(self._model_step(routed))
        return results

    def apply(self, control: Control) -> ControlApplied | Rejected:
        """Apply a control message, as the dataflow's model step does."""
        [out] = self.process(control)
        assert isinstance(out, ControlApplied | Rejected)
        return out

    def statuses(self) -> list[ModelStatus]:
        """What the dataflow would publish on ``model-status`` now."""
        return merge_statuses([summarize(state, i) for i, state in enumerate(self.shards)])

    def score(self, tx: Transaction) -> Scored:
        """Score one transaction; raises if the core rejects it (a duplicate)."""
        for out in self.process(tx):
            if isinstance(out, Scored):
                return out
            if isinstance(out, Rejected) and out.reason is RejectReason.DUPLICATE:
                raise ValueError(out.error)
        raise AssertionError("a transaction always yields a Scored or a Rejected")

    def events(self, event: Transaction | Label) -> list[Noticed]:
        """Process ``event``; what the steps noticed with it (attacks and drifts)."""
        return [out for out in self.process(event) if isinstance(out, Noticed)]

    def learn(self, label: Label) -> Learned | Rejected | None:
        """Learn from a label; None while it waits for its transaction."""
        for out in self.process(label):
            if isinstance(out, Learned | Rejected):
                return out
        return None
