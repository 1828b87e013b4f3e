"""Filtered link-prediction and recommendation metrics over any scorer (torch model or ONNX bundle).

Torch-free: a scorer is a function ``(heads, relations) -> scores`` on numpy arrays.
"""

from kgedge.evaluate.ranking import ScoreFn, evaluate_link_prediction, filtered_ranks, rank_metrics
from kgedge.evaluate.recommend import popularity_scorer, recommendation_metrics

__all__ = [
    "ScoreFn",
    "evaluate_link_prediction",
    "filtered_ranks",
    "popularity_scorer",
    "rank_metrics",
    "recommendation_metrics",
]
