"""TransE (Bordes et al., 2013): ``score = -||h + r - t||``, with the L2 or the L1 distance.

The distance is the model option ``distance``: ``l1``, the paper's (and the default of ``kgedge train``,
see ``MODEL_INIT``), or ``l2``. A checkpoint without the option is L2, the only distance of checkpoints
written before the option existed. L1 scores every entity row by its own sum of differences; L2 keeps
all-tails scoring a matrix product, in training and on the device. L1 wins on the real KGs we measured
(filtered test MRR: Kinships 0.47 vs 0.22, UMLS 0.76-0.77 vs 0.72-0.73, Nations 0.52-0.54 vs 0.50-0.51)
and loses by 0.03 on the demo shop KG; it costs 10-15x more per 1-N training batch at 2k-40k entities
and 4-13x more per device query (14,541 and 100k entities; benchmarks/transe_distance.py --only-latency).
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

from kgedge.models.base import Interaction, KGModel

DISTANCE = "distance"
DISTANCES: tuple[str, ...] = ("l1", "l2")


def transe_distance(options: Mapping[str, object]) -> Interaction:
    """The ``distance`` option of a TransE config: ``l1`` or ``l2`` (``l2`` when absent, as in checkpoints
    written before the option existed; new models get ``l1`` from ``MODEL_INIT``).

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
