"""Compression recipes: TOML files that chain steps (distill -> prune dims -> lowrank -> QAT ...).

A recipe is data: ``[[steps]]`` tables with a ``kind`` and that kind's settings. Unknown kinds or
settings are refused with the step number, the name and what is allowed.

A recipe may instead list ``choose_from``: shipped recipes that are all run, the student with the best
filtered *validation* MRR being kept (``auto``, the CLI's default, tries a narrow int8 student and a
wide 4-bit one at the same bytes: which one learns a KG better depends on the KG).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

STEP_SETTINGS: dict[str, dict[str, object]] = {
    # kind -> allowed settings and their defaults
    "distill": {"student": "auto", "dim": 24, "epochs": 200, "alpha": 1.0, "temperature": 4.0,
                "init": "teacher", "candidates": "auto", "hint_weight": 0.0, "adaptive": False, "lr": None},
    "prune_dims": {"keep": 16, "epochs": 50, "lr": None},
    "prune_magnitude": {"sparsity": 0.5, "threshold": None, "epochs": 20, "lr": None},
    "qat": {"bits": 8, "epochs": 30, "lr": None},
    # entity table E ≈ U·V by truncated SVD, then fine-tune U and V (kept dense when not smaller)
    "lowrank": {"rank": 16, "epochs": 50, "lr": None},
}
# the value each setting takes: "int" (not bool), "number" (int or float), "bool", "text", and "|none"
# for settings whose default None means "the model's own" (a learning rate) or "unset"
SETTING_TYPES: dict[str, str] = {
    "student": "text", "dim": "int", "epochs": "int", "alpha": "number", "temperature": "number", "init": "text",
    "candidates": "text", "hint_weight": "number", "adaptive": "bool", "lr": "number|none", "keep": "int",
    "sparsity": "number", "threshold": "number|none", "bits": "int", "rank": "int",
}
_TYPE_CHECKS = {
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "bool": lambda v: isinstance(v, bool),
    "text": lambda v: isinstance(v, str),
}
_TYPE_WORDS = {"int": "an integer", "number": "a number", "bool": "true or false", "text": "a string"}


def _type_error(name: str, value: object) -> str | None:
    """Why ``value`` does not fit setting ``name`` (None when it does)."""
    wanted, _, nullable = SETTING_TYPES[name].partition("|")
    if (value is None and nullable) or _TYPE_CHECKS[wanted](value):
        return None
    return f"{name}={value!r} must be {_TYPE_WORDS[wanted]}{' (or left out)' if nullable else ''}"


#: ``init`` values of a distill step that start the entity table from a lightweight embedding
EMBEDDING_INITS = ("mf", "deepwalk", "node2vec")
#: how distillation picks the candidate tails of the soft loss (see ``kgedge.compress.distill``)
CANDIDATES = ("full", "sampled", "cached", "auto")
# settings with a fixed set of values, checked when the recipe is read (not after a teacher is loaded)
SETTING_CHOICES: dict[str, tuple[str, ...]] = {
    "init": ("teacher", "random", *EMBEDDING_INITS),
    "candidates": CANDIDATES,
}

# steps that rewrite the dense entity table's columns or weights: meaningless once it is factored
DENSE_ONLY = ("prune_dims", "prune_magnitude")


class RecipeError(ValueError):
    """A recipe file is malformed; the message names the step, the setting and what is allowed."""


@dataclass(frozen=True)
class Step:
    kind: str
    settings: dict[str, object]


@dataclass(frozen=True)
class Recipe:
    name: str
    steps: tuple[Step, ...]
    description: str = ""
    export_bits: int = 8  # bytes are reported as the exporter will store the tables
    source: str = field(default="<dict>", compare=False)
    choose_from: tuple[str, ...] = ()  # shipped recipes to run instead of steps, the best kept

    @classmethod
    def _choice(cls, raw: dict[str, object], source: str) -> Recipe:
        """A recipe of ``choose_from``: names of shipped step recipes, at least two, no steps."""
        names = raw["choose_from"]
        if "steps" in raw or "export_bits" in raw:
            raise RecipeError(f"{source}: a recipe lists either choose_from or [[steps]] (with export_bits), not both")
        shipped = available_recipes()
        if not isinstance(names, list) or len(names) < 2 or not all(isinstance(n, str) for n in names):
            raise RecipeError(f"{source}: choose_from={names!r} must be a list of at least two recipe names")
        for name in names:
            if name not in shipped:
                raise RecipeError(f"{source}: candidate {name!r} is not a shipped recipe; "
                                  f"shipped: {', '.join(shipped)}")
        return cls(name=str(raw.get("name", Path(source).stem)), steps=(), description=str(raw.get("description", "")),
                   source=source, choose_from=tuple(names))

    @classmethod
    def from_dict(cls, raw: dict[str, object], source: str = "<dict>") -> Recipe:
        allowed_top = {"name", "description", "export_bits", "steps", "choose_from"}
        unknown = sorted(set(raw) - allowed_top)
        if unknown:
            raise RecipeError(f"{source}: unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed_top))}")
        if "choose_from" in raw:
            return cls._choice(raw, source)
        steps_raw = raw.get("steps")
        if not isinstance(steps_raw, list) or not steps_raw:
            raise RecipeError(f"{source}: a recipe needs at least one [[steps]] table")
        steps, factored = [], False
        for number, step in enumerate(steps_raw, start=1):
            kind = step.get("kind") if isinstance(step, dict) else None
            if not isinstance(kind, str) or kind not in STEP_SETTINGS:  # a list kind is unhashable
                raise RecipeError(f"{source}: step {number} kind={kind!r}; allowed: {', '.join(STEP_SETTINGS)}")
            defaults = STEP_SETTINGS[kind]
            extra = sorted(set(step) - set(defaults) - {"kind"})
            if extra:
                raise RecipeError(
                    f"{source}: step {number} ({kind}) unknown setting(s) {', '.join(extra)}; allowed: {', '.join(defaults)}"
                )
            if kind in DENSE_ONLY and factored:
                raise RecipeError(f"{source}: step {number} ({kind}) follows a lowrank step; {', '.join(DENSE_ONLY)} "
                                  "need a dense entity table: put them before lowrank")
            factored = kind == "lowrank" or (factored and kind != "distill")  # distill starts a dense student
            given = {k: v for k, v in step.items() if k != "kind"}
            for name, value in given.items():
                problem = _type_error(name, value)
                if problem is None and name in SETTING_CHOICES and value not in SETTING_CHOICES[name]:
                    problem = f"{name}={value!r}; allowed: {', '.join(SETTING_CHOICES[name])}"
                if problem:
                    raise RecipeError(f"{source}: step {number} ({kind}) {problem}")
            steps.append(Step(kind, {**defaults, **given}))
        bits = raw.get("export_bits", 8)
        if bits not in (4, 7, 8, 32):
            raise RecipeError(f"{source}: export_bits={bits!r}; allowed: 4, 7, 8, 32")
        return cls(name=str(raw.get("name", Path(source).stem)), steps=tuple(steps),
                   description=str(raw.get("description", "")), export_bits=int(bits), source=source)


def recipe_dir() -> Path:
    return Path(__file__).parent / "recipes"


def available_recipes() -> dict[str, Path]:
    return {p.stem: p for p in sorted(recipe_dir().glob("*.toml"))}


def load_recipe(spec: str | Path | None) -> Recipe:
    """A shipped recipe by name (default: ``default``) or a TOML file (a candidate of a choice is a shipped
    recipe of steps: :func:`candidate_recipes`)."""
    spec = spec or "default"
    path = Path(spec)
    if not path.is_file():
        recipes = available_recipes()
        if str(spec) not in recipes:
            raise RecipeError(f"unknown recipe {str(spec)!r}; shipped: {', '.join(recipes)}, or pass a .toml file")
        path = recipes[str(spec)]
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as err:  # ValueError: bad UTF-8/TOML, an int of > 4300 digits
        raise RecipeError(f"{path}: cannot read recipe ({err})") from None
    return Recipe.from_dict(raw, source=str(path))


def candidate_recipes(recipe: Recipe) -> list[Recipe]:
    """The step recipes a choice runs; a candidate that is itself a choice is refused."""
    loaded = [load_recipe(name) for name in recipe.choose_from]
    for candidate in loaded:
        if candidate.choose_from:
            raise RecipeError(f"{recipe.source}: candidate {candidate.name!r} lists choose_from itself; "
                              "candidates must be recipes of [[steps]]")
    return loaded
