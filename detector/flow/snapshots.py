"""Recovery snapshots of the keyed state: pickled at once, with a format number."""

from __future__ import annotations

import pickle
from typing import TypeVar

from detector import __version__

# Snapshots are pickled at once, which copies the state as it is at the end of the epoch
# (Bytewax pickles what ``snapshot`` returns later, while the state goes on changing),
# and carry a format number: a store written by another format is refused, not misread.
# Format 5: the model step holds the rules, lists and valves, capacity thresholds and the
# models' calibrators; the model step gives format 4 models what they lack
# (``detector.scoring.ensure_models``), the other states are the same in both.
# Format 6: each model's quality tracker keeps its labels' sources, the verdicts changed
# and a quality trend; a tracker of format 4 or 5 gets them empty when unpickled
# (``models.quality.QualityTracker.__setstate__``).
SNAPSHOT_FORMAT = 6
READABLE_FORMATS = (4, 5, 6)
# (format, version that wrote it, pickled state)
Snapshot = tuple[int, str, bytes]
T = TypeVar("T")


class RecoveryStoreError(RuntimeError):
    """The recovery store holds snapshots this version cannot read."""


def freeze(state: object) -> Snapshot:
    return SNAPSHOT_FORMAT, __version__, pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)


def thaw(snapshot: object, kind: type[T]) -> T:
    if (
        isinstance(snapshot, tuple)
        and len(snapshot) == 3
        and snapshot[0] in READABLE_FORMATS
        and isinstance(snapshot[2], bytes)
    ):
        state = pickle.loads(snapshot[2])
        if isinstance(state, kind):
            return state
    written_by = (
        f"fraudstream {snapshot[1]} (format {snapshot[0]})"
        if isinstance(snapshot, tuple) and len(snapshot) == 3
        else "an older fraudstream"
    )
    raise RecoveryStoreError(
        f"the recovery store was written by {written_by}; this is fraudstream {__version__} "
        f"(format {SNAPSHOT_FORMAT}). Start from scratch by deleting FRAUDSTREAM_RECOVERY_DIR "
        f"(and the output topics' consumers' expectations), or run the version that wrote it."
    )
