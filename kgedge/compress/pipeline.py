"""Run a compression recipe: each step fine-tunes the student (distilling from the teacher) and is
measured: parameters, bytes as exported, filtered test MRR, Hits@10, share of the teacher's MRR.

A recipe of ``choose_from`` runs each of those recipes and keeps the student with the best filtered
validation MRR (the test split only reports; it never chooses).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from kgedge.compress.distill import DistillConfig, DistillationLoss, resolve_candidates
from kgedge.compress.init import init_student_from_embedding, init_student_from_teacher
from kgedge.compress.lowrank import factorize_entities, is_factored
from kgedge.compress.prune import finish_pruning, magnitude_prune, prune_dimensions
from kgedge.compress.qat import enable_qat, finish_qat
from kgedge.compress.recipe import DENSE_ONLY, EMBEDDING_INITS, Recipe, Step, candidate_recipes
from kgedge.compress.size import table_bytes
from kgedge.compress.teacher_cache import TeacherTopK
from kgedge.data.kg import KnowledgeGraph
from kgedge.evaluate import evaluate_link_prediction
from kgedge.models import KGModel, ModelConfig, build
from kgedge.models.transe import DISTANCE
from kgedge.train.config import default_model_options, default_train_config
from kgedge.train.scorer import model_scorer
from kgedge.train.trainer import StepCallback, train_model

log = logging.getLogger(__name__)

# What ``student = "auto"`` distils into, whatever the teacher: a ComplEx student. At the same reals per row it
# matched (within 0.005) or beat a student of the teacher's own family in 11 of 12 teacher/KG pairs
# (benchmarks/student_family.py, int8 QAT students of TransE, DistMult and RotatE teachers on UMLS, Nations, Kinships
# and the demo KG): by 0.017-0.335 test MRR for TransE teachers, whose own students would also keep the L1 graph's
# 4-13x slower queries; by 0.006-0.034 for RotatE teachers on the real KGs; it lost 0.010 once (a RotatE teacher
# on the demo KG; the run before RotatE learnt a temperature per relation had it 0.014 ahead there, and one lost
# 0.012 on Nations before RotatE trained normalised rows). It serves as a dot product on the device.
AUTO_STUDENT = "complex"


@dataclass
class StepReport:
    """One row of ``kgedge compress``'s output."""

    step: str
    model: str
    dim: int
    parameters: int
    bytes: int
    compression: float
    mrr: float
    hits_at_10: float
    teacher_share: float
    seconds: float
    note: str = ""
    recipe: str = ""  # the recipe the step belongs to


@dataclass
class Candidate:
    """One candidate recipe of a choice, as measured: what chose it (validation) and what it reached (test)."""

    recipe: str
    valid_mrr: float
    mrr: float
    bytes: int
    compression: float
    bits: int | None
    chosen: bool = False


@dataclass
class CompressResult:
    model: KGModel
    teacher: dict[str, float]
    steps: list[StepReport] = field(default_factory=list)
    bits: int | None = None  # table bits the student was fine-tuned for (QAT)
    recipe: str = ""  # the recipe whose steps made ``model`` (a choice's chosen candidate)
    export_bits: int = 8  # table bits the student is meant to be exported at
    candidates: list[Candidate] = field(default_factory=list)  # a choice's candidates, chosen one marked


def student_family(requested: str) -> str:
    return AUTO_STUDENT if requested == "auto" else requested


def inherited_options(teacher: KGModel, family: str) -> dict[str, object]:
    """The model options a student of ``family`` takes from its teacher: a TransE student keeps its
    TransE teacher's distance, so that the student learns the function the teacher computes."""
    if family == "transe" and teacher.config.model == "transe":
        return {DISTANCE: teacher.interaction}
    return {}


def _test_metrics(model: KGModel, kg: KnowledgeGraph) -> dict[str, float]:
    return evaluate_link_prediction(model_scorer(model), kg, "test")


class _Teacher:
    """What every step of a recipe, and every recipe of a choice, needs of the teacher, computed once:
    its test metrics, its table bytes, and its cached answers (:class:`TeacherTopK`, built on first use)."""

    def __init__(self, model: KGModel, kg: KnowledgeGraph) -> None:
        self.model, self.kg = model.eval(), kg
        self.metrics = _test_metrics(self.model, kg)
        self.bytes = table_bytes(self.model, None)
        self._caches: dict[tuple[int, float], TeacherTopK] = {}

    def cache(self, distill: DistillConfig) -> TeacherTopK | None:
        if resolve_candidates(distill, self.kg.num_entities) != "cached" or not distill.alpha:
            return None
        key = (distill.teacher_topk, distill.temperature)
        if key not in self._caches:
            queries = torch.as_tensor(self.kg.with_reciprocals(self.kg.train))
            self._caches[key] = TeacherTopK(self.model, queries, self.model.config.num_relations, *key)
        return self._caches[key]


def _fine_tune(
    model: KGModel, teacher: KGModel, kg: KnowledgeGraph, step: Step, distill: DistillConfig, seed: int,
    max_time_s: float, on_train_step: StepCallback | None = None, cache: TeacherTopK | None = None,
) -> KGModel:
    config = default_train_config(model.config.model, epochs=int(step.settings["epochs"]), lr=step.settings.get("lr"),
                                  seed=seed, max_time_s=max_time_s)
    hook = (DistillationLoss(teacher, distill, kg.num_entities, torch.Generator().manual_seed(seed), cache)
            if distill.alpha else None)
    # a fine-tuning step (QAT, pruning, low rank) starts from a trained student: its start competes, so
    # that a step never hands on a student that validates worse than the one it was given
    return train_model(kg, model.config, config, model=model, loss_hook=hook, on_step=on_train_step,
                       validate_start=step.kind != "distill").model


def _low_rank(model: KGModel, rank: int, bits: int | None) -> KGModel | None:
    """``model`` with its entity table factored to ``rank``, or None when that stores no fewer bytes at ``bits``."""
    factored = factorize_entities(model, rank)
    return factored if table_bytes(factored, bits) < table_bytes(model, bits) else None


def run_recipe(
    teacher: KGModel,
    kg: KnowledgeGraph,
    recipe: Recipe,
    seed: int = 0,
    max_time_s: float = 0.0,
    on_step: Callable[[StepReport], None] | None = None,
    on_train_step: StepCallback | None = None,
) -> CompressResult:
    """Compress ``teacher`` by the recipe's steps; every step's student is measured on the test split.

    ``on_step`` gets each recipe step's report; ``on_train_step`` every training batch of the
    fine-tuning inside the steps (the trainer's progress callback).
    """
    context = _Teacher(teacher, kg)
    if recipe.choose_from:
        return _run_choice(context, recipe, seed, max_time_s, on_step, on_train_step)
    return _run_steps(context, recipe, seed, max_time_s, on_step, on_train_step)


def _run_steps(
    context: _Teacher, recipe: Recipe, seed: int, max_time_s: float,
    on_step: Callable[[StepReport], None] | None, on_train_step: StepCallback | None,
) -> CompressResult:
    """The steps of one recipe (see :func:`run_recipe`)."""
    teacher, kg = context.model, context.kg
    result = CompressResult(model=teacher, teacher=context.metrics, recipe=recipe.name, export_bits=recipe.export_bits)
    student: KGModel | None = None
    distill = DistillConfig()

    def bits() -> int | None:  # the table bits that bytes are reported at
        return result.bits if result.bits is not None else (None if recipe.export_bits == 32 else recipe.export_bits)

    def tune(model: KGModel) -> KGModel:  # fine-tune under the current step and distillation settings
        return _fine_tune(model, teacher, kg, step, distill, seed, max_time_s, on_train_step, context.cache(distill))

    for number, step in enumerate(recipe.steps, start=1):
        started = time.perf_counter()
        s, note = step.settings, ""
        if step.kind == "distill":
            distill = DistillConfig(alpha=float(s["alpha"]), temperature=float(s["temperature"]),
                                    candidates=str(s["candidates"]), hint_weight=float(s["hint_weight"]),
                                    adaptive=bool(s["adaptive"]))
            torch.manual_seed(seed)
            family = student_family(str(s["student"]))
            config = ModelConfig(model=family, num_entities=kg.num_entities, num_relations=teacher.config.num_relations,
                                 dim=int(s["dim"]), **default_model_options(family, inherited_options(teacher, family)))
            student = build(config)
            if s["init"] == "teacher":
                init_student_from_teacher(student, teacher)
            elif s["init"] in EMBEDDING_INITS:
                init_student_from_embedding(student, teacher, kg, str(s["init"]), seed)
            elif s["init"] != "random":
                raise ValueError(f"step {number} (distill) init={s['init']!r}; allowed: teacher, random, "
                                 f"{', '.join(EMBEDDING_INITS)}")
            student = tune(student)
        else:
            if student is None:  # compressing the teacher itself (e.g. QAT or pruning only)
                student = build(teacher.config)
                student.load_state_dict(teacher.state_dict())
            if step.kind in DENSE_ONLY and is_factored(student):
                raise ValueError(f"step {number} ({step.kind}) needs a dense entity table; the model's is factored "
                                 "(lowrank): prune before factoring")
            if step.kind == "prune_dims":
                student = tune(prune_dimensions(student, int(s["keep"])))
            elif step.kind == "prune_magnitude":
                sparsity = magnitude_prune(student, s["sparsity"] if s["threshold"] is None else None, s["threshold"])
                student = finish_pruning(tune(student))
                note = f"sparsity {sparsity:.0%}: zeros are stored densely, no bytes or time saved at export"
            elif step.kind == "lowrank":
                factored = _low_rank(student, int(s["rank"]), bits())
                if factored is None:
                    note = f"rank {s['rank']} stores no fewer bytes than the table as it is: kept, not fine-tuned"
                else:
                    student = tune(factored)
                    note = f"entity table as U {tuple(student.entity.u.shape)} · V {tuple(student.entity.v.shape)}"
            elif step.kind == "qat":
                result.bits = int(s["bits"])
                student = finish_qat(tune(enable_qat(student, result.bits)))
        assert student is not None
        metrics = _test_metrics(student, kg)
        size = table_bytes(student, bits())
        report = StepReport(
            step=f"{number}:{step.kind}", model=student.config.model, dim=student.config.dim,
            parameters=sum(p.numel() for p in student.parameters()), bytes=size,
            compression=context.bytes / size, mrr=metrics["mrr"], hits_at_10=metrics["hits_at_10"],
            teacher_share=metrics["mrr"] / max(context.metrics["mrr"], 1e-12),
            seconds=time.perf_counter() - started, note=note, recipe=recipe.name,
        )
        log.info("%s", report)
        result.steps.append(report)
        if on_step is not None:
            on_step(report)
    assert student is not None
    result.model = student.eval()
    return result


def _run_choice(
    context: _Teacher, recipe: Recipe, seed: int, max_time_s: float,
    on_step: Callable[[StepReport], None] | None, on_train_step: StepCallback | None,
) -> CompressResult:
    """Run every candidate recipe with the same teacher context (its metrics and cache computed once);
    keep the student with the best filtered validation MRR (ties: the first)."""
    results, candidates = [], []
    for candidate in candidate_recipes(recipe):
        result = _run_steps(context, candidate, seed, max_time_s, on_step, on_train_step)
        valid = evaluate_link_prediction(model_scorer(result.model), context.kg, "valid")["mrr"]
        last = result.steps[-1]
        log.info("candidate %s: validation MRR %.4f", candidate.name, valid)
        results.append(result)
        candidates.append(Candidate(candidate.name, valid, last.mrr, last.bytes, last.compression, result.bits))
    best = max(range(len(results)), key=lambda i: candidates[i].valid_mrr)
    candidates[best].chosen = True
    chosen = results[best]
    chosen.candidates = candidates
    return chosen
