"""Resolve ``--data``: a directory, or a built-in name (``demo``, ``nations``, ``umls``, ``wordnet-rr``)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from kgedge.data.kg import KnowledgeGraph, load_kg
from kgedge.data.tsv import KGFormatError

log = logging.getLogger(__name__)

# Real datasets are read from $KGEDGE_DATA (default ../shared/data), never copied into the repo.
REAL_DATASETS = ("nations", "umls", "wordnet-rr")
DEMO = "demo"
DEMO_ENTITIES = 2000
DEMO_SEED = 0


def data_root() -> Path:
    """``$KGEDGE_DATA``, else ``../shared/data`` relative to the working directory."""
    return Path(os.environ.get("KGEDGE_DATA", "../shared/data"))


def cache_root() -> Path:
    """Where generated data (the demo KG) is kept: ``$KGEDGE_CACHE`` or ``~/.cache/kgedge``."""
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "kgedge"
    return Path(os.environ.get("KGEDGE_CACHE", default))


def builtin_names() -> list[str]:
    return [DEMO, *REAL_DATASETS]


def demo_dir() -> Path:
    """The demo KG's directory, generated on first use (deterministic, seed 0, 2000 entities)."""
    from kgedge.data.generate import ShopConfig, generate_shop_kg, write_shop_kg

    directory = cache_root() / f"demo-{DEMO_ENTITIES}-seed{DEMO_SEED}"
    if not (directory / "train.txt").is_file():
        log.info("generating the demo KG into %s", directory)
        directory.parent.mkdir(parents=True, exist_ok=True)
        kg = generate_shop_kg(ShopConfig(num_entities=DEMO_ENTITIES, seed=DEMO_SEED))
        try:
            write_shop_kg(kg, directory)
        except FileExistsError:  # another process generated it meanwhile: same seed, same bytes
            pass
    return directory


def pykeen_dataset_dir(name: str) -> Path | None:
    """The directory of a small dataset shipped inside the optional ``pykeen`` wheel."""
    try:
        import pykeen  # noqa: F401  (optional: only to locate its bundled files)
    except ImportError:
        return None
    directory = Path(pykeen.__file__).parent / "datasets" / name
    return directory if (directory / "train.txt").is_file() else None


def resolve_data(spec: str | Path) -> Path:
    """A dataset directory for ``spec``: an existing path, or a built-in name.

    Raises:
        KGFormatError: the name is unknown, or a real dataset is not where ``$KGEDGE_DATA`` points.
    """
    path = Path(spec)
    if path.is_dir():
        return path
    name = str(spec)
    if name == DEMO:
        return demo_dir()
    if name in REAL_DATASETS:
        directory = data_root() / name
        if (directory / "train.txt").is_file():
            return directory
        bundled = pykeen_dataset_dir(name)
        if bundled is not None:
            return bundled
        raise KGFormatError(
            f"dataset {name!r} not found under {data_root().resolve()}; set KGEDGE_DATA to the folder "
            f"that holds {name}/train.txt (the repo's CI uses ../shared/data), or install kgedge[bench] "
            "so that PyKEEN's bundled copies of nations and umls are used"
        )
    bundled = pykeen_dataset_dir(name)
    if bundled is not None:
        return bundled
    raise KGFormatError(
        f"--data {name!r} is neither a directory nor a built-in dataset; built-in names: "
        f"{', '.join(builtin_names())}"
    )


def load_data(spec: str | Path) -> KnowledgeGraph:
    """Resolve and load ``spec`` (see :func:`resolve_data`)."""
    path = resolve_data(spec)
    name = str(spec) if str(spec) in builtin_names() else path.name
    return load_kg(path, name=name)
