"""TransE (Bordes et al., 2013): ``score = -||h + r - t||``, with the L2 or the L1 distance.

The distance is the model option ``distance`` (``l2``, the default, or ``l1``; a checkpoint without the
option is L2). L2 keeps all-tails scoring a matrix product, in training and on the device. The paper's
L1 scores every entity row by its own sum of differences: on UMLS it beats L2 by 0.03-0.05 filtered
test MRR, on the demo shop KG it loses by 0.03, and it costs 12-15x more per 1-N training batch at 2k-40k
entities and 5-17x more per device query (benchmarks/transe_distance.py).
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

from kgedge.models.base import Interaction, KGModel

DISTANCE = "distance"
DISTANCES: tuple[str, ...] = ("l1", "l2")


def transe_distance(options: Mapping[str, object]) -> Interaction:
    """The ``distance`` option of a TransE config: ``l1`` or ``l2`` (``l2`` when absent).

    Raises:
        ValueError: any other value.
    """
    value = options.get(DISTANCE, "l2")
    if value not in DISTANCES:
        raise ValueError(f"TransE option distance={value!r}; allowed: {', '.join(DISTANCES)}")
    return value  # type: ignore[return-value]


class TransE(KGModel):
    interaction = "l2"

    def __init__(self, config) -> None:  # noqa: ANN001 (ModelConfig; same signature as the base)
        super().__init__(config)
        self.interaction = transe_distance(config.options)  # type: ignore[misc]  (per instance: chosen distance)

    def query(self, heads: Tensor, relations: Tensor) -> Tensor:
        return self.entity(heads) + self.relation(relations)
