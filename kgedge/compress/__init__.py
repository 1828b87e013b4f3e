"""Compression: distillation, pruning, quantization-aware training, recipes that chain them."""

from kgedge.compress.distill import DistillConfig, DistillationLoss
from kgedge.compress.pipeline import CompressResult, StepReport, run_recipe
from kgedge.compress.recipe import Recipe, RecipeError, load_recipe

__all__ = ["CompressResult", "DistillConfig", "DistillationLoss", "Recipe", "RecipeError", "StepReport", "load_recipe", "run_recipe"]
