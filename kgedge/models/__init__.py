"""Model registry: a plain dict and one ``resolve`` that lists the valid names on error."""

from __future__ import annotations

from kgedge.models.base import KGModel, ModelConfig
from kgedge.models.complex import ComplEx
from kgedge.models.distmult import DistMult
from kgedge.models.gat import GAT
from kgedge.models.gcn import GCN
from kgedge.models.rgcn import RGCN
from kgedge.models.rotate import RotatE
from kgedge.models.transe import TransE

MODELS: dict[str, type[KGModel]] = {
    "transe": TransE,
    "distmult": DistMult,
    "complex": ComplEx,
    "rotate": RotatE,
    "gcn": GCN,
    "gat": GAT,
    "rgcn": RGCN,
}


def resolve(name: str) -> type[KGModel]:
    """The model class registered as ``name`` (case-insensitive)."""
    try:
        return MODELS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}") from None


def build(config: ModelConfig) -> KGModel:
    return resolve(config.model)(config)


__all__ = ["MODELS", "KGModel", "ModelConfig", "build", "resolve"]
