"""Deterministic synthetic e-commerce knowledge graph: kgedge's demo data.

Users have a latent taste (a Dirichlet mix over a few product categories plus a favourite brand);
items have Zipf popularity; purchases and views are drawn from taste x popularity with a little
noise, so an embedding model beats a popularity baseline on ``bought`` and a random model scores ~0.
Everything is vectorised with numpy: 1M entities take seconds, not minutes. Numpy + stdlib only.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Final

import numpy as np

logger = logging.getLogger(__name__)

GENERATOR_VERSION: Final = 1  # bump when the same config would produce different data
ENTITY_TYPES: Final = ("user", "product", "accessory", "brand", "category", "intent")
RELATIONS: Final = ("bought", "viewed", "belongs_to", "made_by", "compatible_with", "answers")
#: relation -> (allowed head types, allowed tail types)
RELATION_SCHEMA: Final[dict[str, tuple[tuple[str, ...], tuple[str, ...]]]] = {
    "bought": (("user",), ("product", "accessory")),
    "viewed": (("user",), ("product",)),
    "belongs_to": (("product", "accessory"), ("category",)),
    "made_by": (("product", "accessory"), ("brand",)),
    "compatible_with": (("accessory",), ("product",)),
    "answers": (("intent",), ("product",)),
}
#: Relations split 90/5/5; belongs_to and made_by are catalogue facts and stay in train.
EVAL_RELATIONS: Final = ("bought", "viewed", "compatible_with", "answers")
_SHARES: Final = {"product": 0.35, "accessory": 0.10, "brand": 0.02, "category": 0.01, "intent": 0.07}
_MINIMUM: Final = {"product": 40, "accessory": 16, "brand": 8, "category": 5, "intent": 8}
_MIN_ENTITIES, _MAX_ENTITIES = 200, 5_000_000


@dataclass(frozen=True)
class ShopConfig:
    """How to generate the shop graph; the same config always gives byte-identical files."""

    num_entities: int = 2000  # total entities over all types; users take what the others leave (~45%)
    seed: int = 0
    # Mean items bought per user; views add ~1.6x that, giving an average degree of ~13.
    mean_purchases: float = 5.0
    # Zipf exponent of item popularity: 0 is uniform (popularity baseline useless), ~1 lets a few
    # items dominate (baseline strong). 0.8 keeps the baseline meaningful but beatable.
    popularity_exponent: float = 0.8
    # Product categories in a user's taste; fewer means sharper, easier-to-learn tastes.
    taste_size: int = 3
    # Share of purchases drawn by popularity alone, ignoring taste (views get twice this).
    noise: float = 0.05
    valid_fraction: float = 0.05
    test_fraction: float = 0.05

    def __post_init__(self) -> None:
        def check(name: str, ok: bool, allowed: str) -> None:
            if not ok:
                raise ValueError(f"ShopConfig.{name}={getattr(self, name)!r} is invalid; allowed: {allowed}")

        check("num_entities", isinstance(self.num_entities, int) and not isinstance(self.num_entities, bool)
              and _MIN_ENTITIES <= self.num_entities <= _MAX_ENTITIES,
              f"an int from {_MIN_ENTITIES} (every entity type needs a handful) to {_MAX_ENTITIES:_}")
        check("seed", isinstance(self.seed, int) and self.seed >= 0, "an int >= 0")
        check("mean_purchases", 1.0 <= self.mean_purchases <= 100.0, "1.0 to 100.0")
        check("popularity_exponent", 0.0 <= self.popularity_exponent <= 2.0, "0.0 to 2.0")
        check("taste_size", isinstance(self.taste_size, int) and 1 <= self.taste_size <= 10, "an int 1 to 10")
        check("noise", 0.0 <= self.noise <= 0.5, "0.0 to 0.5")
        check("valid_fraction", 0.0 < self.valid_fraction <= 0.2, "0.0 (exclusive) to 0.2")
        check("test_fraction", 0.0 < self.test_fraction <= 0.2, "0.0 (exclusive) to 0.2")


@dataclass(frozen=True, eq=False)
class ShopKG:
    """A generated shop graph.

    ``train``/``valid``/``test``: read-only object arrays of str, shape: (n_triples, 3), columns
    (head, relation, tail); no triple repeats within or across splits; ordered by relation (as in
    ``RELATIONS``), then head, then tail (entity ids: ``ENTITY_TYPES`` order, then index).
    ``entity_types``: every entity name -> its type, ``len == config.num_entities``.
    """

    config: ShopConfig
    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    entity_types: dict[str, str]


def _type_counts(n: int) -> dict[str, int]:
    counts = {t: max(_MINIMUM[t], round(n * share)) for t, share in _SHARES.items()}
    return {"user": n - sum(counts.values()), **counts}


def _csr(src: np.ndarray, dst: np.ndarray, n_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Adjacency as (offsets shape: (n_rows + 1,), values) sorted by ``src``."""
    order = np.argsort(src, kind="stable")
    return np.concatenate([[0], np.cumsum(np.bincount(src, minlength=n_rows))]), dst[order]


def _pick(csr: tuple[np.ndarray, np.ndarray], rows: np.ndarray, r: np.ndarray) -> np.ndarray:
    """One uniform neighbour per row (rows must have one); ``r`` uniform in [0, 1), shape like rows."""
    offsets, values = csr
    return values[offsets[rows] + (r * (offsets[rows + 1] - offsets[rows])).astype(np.int64)]


@dataclass(frozen=True)
class _Catalogue:
    """Items ("slots", products first) sorted by (category, brand) line, so a category's or a line's
    items are a contiguous slot range and popularity-weighted sampling is one searchsorted."""

    n_brand: int
    line_key: np.ndarray  # shape: (n_lines,), category * n_brand + brand, ascending
    line_lo: np.ndarray  # shape: (n_lines,), first slot of each line; line_hi one past its last
    line_hi: np.ndarray
    cat_lo: np.ndarray  # shape: (n_categories,), slot range of each category
    cat_hi: np.ndarray
    cum0: np.ndarray  # shape: (n_slots + 1,), cumulative popularity starting at 0
    compat: tuple[np.ndarray, np.ndarray]  # category -> compatible categories of the other kind

    def sample(self, lo: np.ndarray, hi: np.ndarray, r: np.ndarray) -> np.ndarray:
        """One slot per row from [lo, hi), weighted by popularity; all shape: (m,)."""
        x = self.cum0[lo] + r * (self.cum0[hi] - self.cum0[lo])
        return np.clip(np.searchsorted(self.cum0, x, side="right") - 1, lo, hi - 1)

    def find_line(self, brand: np.ndarray, cat: np.ndarray) -> np.ndarray:
        """Line index of (brand, category), or -1 where that brand makes nothing in it."""
        key = cat * self.n_brand + brand
        pos = np.minimum(np.searchsorted(self.line_key, key), self.line_key.size - 1)
        return np.where(self.line_key[pos] == key, pos, -1)

    def range_of(self, line: np.ndarray, cat: np.ndarray, use_line: np.ndarray) -> tuple[np.ndarray, ...]:
        """Slot range of ``line`` where ``use_line`` (and the line exists), else of ``cat``."""
        use = use_line & (line >= 0)
        return (np.where(use, self.line_lo[line], self.cat_lo[cat]),
                np.where(use, self.line_hi[line], self.cat_hi[cat]))


def _taste_sample(rng: np.random.Generator, cat: _Catalogue, users: np.ndarray, taste: dict[str, np.ndarray],
                  p_line: float, p_accessory: float, noise: float, noise_hi: int) -> np.ndarray:
    """One item slot per event of ``users`` (shape: (m,)): taste slot by Dirichlet weight, then the
    user's favourite-brand line (``p_line``) or the whole category; ``p_accessory`` of events buy from
    an accessory category compatible with it instead; ``noise`` of events pick from slots [0, noise_hi)."""
    m = users.size
    k = np.minimum((rng.random(m)[:, None] > taste["cumw"][users]).sum(axis=1), taste["cat"].shape[1] - 1)
    c = taste["cat"][users, k]
    lo, hi = cat.range_of(taste["line"][users, k], c, rng.random(m) < p_line)
    acc = np.flatnonzero((rng.random(m) < p_accessory) & (np.diff(cat.compat[0])[c] > 0))
    ac = _pick(cat.compat, c[acc], rng.random(acc.size))
    lo[acc], hi[acc] = cat.range_of(cat.find_line(taste["brand"][users[acc]], ac), ac,
                                    rng.random(acc.size) < p_line)
    glob = rng.random(m) < noise
    lo[glob], hi[glob] = 0, noise_hi
    return cat.sample(lo, hi, rng.random(m))


def generate_shop_kg(config: ShopConfig) -> ShopKG:
    """Generate the shop graph; deterministic in ``config``. ~6.5 triples per entity."""
    start = time.perf_counter()
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, GENERATOR_VERSION]))
    counts = _type_counts(config.num_entities)
    offset = dict(zip(ENTITY_TYPES, np.cumsum([0] + [counts[t] for t in ENTITY_TYPES[:-1]]).tolist()))
    n_ent, n_user, n_prod, n_acc = config.num_entities, counts["user"], counts["product"], counts["accessory"]
    n_brand, n_cat = counts["brand"], counts["category"]
    n_acc_cat = max(2, round(0.3 * n_cat))
    n_prod_cat = n_cat - n_acc_cat  # categories [0, n_prod_cat) hold products, the rest accessories

    # Each accessory category fits 1-2 product categories (cases fit phones and tablets).
    pair_a = np.repeat(np.arange(n_prod_cat, n_cat), 1 + (rng.random(n_acc_cat) < 0.5))
    pairs = np.unique(pair_a * n_cat + rng.integers(0, n_prod_cat, pair_a.size))
    pa, pp = pairs // n_cat, pairs % n_cat
    compat = _csr(np.concatenate([pa, pp]), np.concatenate([pp, pa]), n_cat)

    # Brands: a primary category each (every category gets one); half also make a compatible
    # category, so an accessory can share its brand with the products it fits.
    primary = np.empty(n_brand, np.int64)
    primary[rng.permutation(n_brand)] = np.arange(n_brand) % n_cat
    second = np.flatnonzero((rng.random(n_brand) < 0.5) & (np.diff(compat[0])[primary] > 0))
    line_brand = np.concatenate([np.arange(n_brand), second])
    line_cat = np.concatenate([primary, _pick(compat, primary[second], rng.random(second.size))])
    order = np.lexsort((line_brand, line_cat))
    line_brand, line_cat = line_brand[order], line_cat[order]

    # Items onto lines: one per line (so every brand and category is used), the rest weighted by a
    # Zipf brand size times a lognormal category size.
    brand_w = 1.0 / (rng.permutation(n_brand) + 1.0)
    cat_w = rng.lognormal(0.0, 0.5, n_cat)

    def assign(lines: np.ndarray, count: int) -> np.ndarray:
        assert lines.size <= count, "more product lines than items; raise the type minimums"
        w = brand_w[line_brand[lines]] * cat_w[line_cat[lines]]
        return np.concatenate([lines, rng.choice(lines, size=count - lines.size, p=w / w.sum())])

    is_prod = line_cat < n_prod_cat
    slot_line = np.sort(np.concatenate([assign(np.flatnonzero(is_prod), n_prod),
                                        assign(np.flatnonzero(~is_prod), n_acc)]))
    slot_cat, slot_brand = line_cat[slot_line], line_brand[slot_line]
    n_slot, n_line = slot_line.size, line_cat.size
    pop = 1.0 / (rng.permutation(n_slot) + 1.0) ** config.popularity_exponent
    cat = _Catalogue(
        n_brand=n_brand, line_key=line_cat * n_brand + line_brand,
        line_lo=np.searchsorted(slot_line, np.arange(n_line)),
        line_hi=np.searchsorted(slot_line, np.arange(n_line), side="right"),
        cat_lo=np.searchsorted(slot_cat, np.arange(n_cat)),
        cat_hi=np.searchsorted(slot_cat, np.arange(n_cat), side="right"),
        cum0=np.concatenate([[0.0], np.cumsum(pop)]), compat=compat)
    slot_entity = np.concatenate([offset["product"] + rng.permutation(n_prod),
                                  offset["accessory"] + rng.permutation(n_acc)])

    # User taste: Dirichlet(0.5) weights over taste_size product categories (popular categories more
    # likely); a favourite brand taken from the first category, used wherever it makes something.
    cat_pop = 1.0 / (rng.permutation(n_prod_cat) + 1.0) ** 0.7
    cat_pop /= cat_pop.sum()
    user_cat = rng.choice(n_prod_cat, size=(n_user, config.taste_size), p=cat_pop)
    cat_line_lo = np.searchsorted(line_cat, np.arange(n_cat))
    cat_line_n = np.searchsorted(line_cat, np.arange(n_cat), side="right") - cat_line_lo
    any_line = cat_line_lo[user_cat] + (rng.random(user_cat.shape) * cat_line_n[user_cat]).astype(np.int64)
    fav_brand = line_brand[any_line[:, 0]]
    user_line = cat.find_line(fav_brand[:, None], user_cat)
    taste = {"cat": user_cat, "brand": fav_brand, "line": np.where(user_line >= 0, user_line, any_line),
             "cumw": np.cumsum(rng.dirichlet(np.full(config.taste_size, 0.5), size=n_user), axis=1)}

    # bought: at least one each (negative binomial tail); viewed: most bought products + noisier extras.
    n_buy = 1 + rng.negative_binomial(2, 2.0 / (1.0 + config.mean_purchases), n_user)
    buyers = np.repeat(np.arange(n_user), n_buy)
    bought = _taste_sample(rng, cat, buyers, taste, 0.5, 0.15, config.noise, n_slot)
    seen = (bought < n_prod) & (rng.random(bought.size) < 0.8)
    viewers = np.repeat(np.arange(n_user), rng.poisson(0.8 * config.mean_purchases, n_user))
    viewed = _taste_sample(rng, cat, viewers, taste, 0.3, 0.0, min(1.0, 2 * config.noise), n_prod)

    # compatible_with: each accessory fits 2+ products of its compatible categories, 70% same brand.
    acc_slots = np.repeat(np.arange(n_prod, n_slot), 2 + rng.poisson(2.0, n_acc))
    fit_cat = _pick(compat, slot_cat[acc_slots], rng.random(acc_slots.size))
    lo, hi = cat.range_of(cat.find_line(slot_brand[acc_slots], fit_cat), fit_cat,
                          rng.random(acc_slots.size) < 0.7)
    fits = cat.sample(lo, hi, rng.random(acc_slots.size))
    # answers: each intent concerns one product category and answers its popular products.
    n_int = counts["intent"]
    intents = np.repeat(np.arange(n_int), 2 + rng.poisson(1.5, n_int))
    intent_cat = rng.choice(n_prod_cat, size=n_int, p=cat_pop)[intents]
    answered = cat.sample(cat.cat_lo[intent_cat], cat.cat_hi[intent_cat], rng.random(intents.size))

    u, items = offset["user"], np.arange(n_slot)
    parts = [(0, u + buyers, slot_entity[bought]),
             (1, np.concatenate([u + buyers[seen], u + viewers]),
              slot_entity[np.concatenate([bought[seen], viewed])]),
             (2, slot_entity[items], offset["category"] + slot_cat),
             (3, slot_entity[items], offset["brand"] + slot_brand),
             (4, slot_entity[acc_slots], slot_entity[fits]),
             (5, offset["intent"] + intents, slot_entity[answered])]
    key = np.sort(np.concatenate([(rel * n_ent + h) * n_ent + t for rel, h, t in parts]))
    key = key[np.concatenate([[True], key[1:] != key[:-1]])]  # dedupe; np.unique hashes, 10x slower
    rel, head, tail = key // (n_ent * n_ent), key // n_ent % n_ent, key % n_ent
    which = _split(config, rel, head, tail, n_ent)

    width = {t: max(2, len(str(counts[t] - 1))) for t in ENTITY_TYPES}  # user_000123, brand_07, ...
    name_list = [f"{t}_{i:0{width[t]}d}" for t in ENTITY_TYPES for i in range(counts[t])]
    names = np.array(name_list, dtype=object)
    types = np.repeat(ENTITY_TYPES, [counts[t] for t in ENTITY_TYPES]).tolist()
    rel_names = np.array(RELATIONS, dtype=object)

    def strings(mask: np.ndarray) -> np.ndarray:
        out = np.stack([names[head[mask]], rel_names[rel[mask]], names[tail[mask]]], axis=1)
        out.flags.writeable = False
        return out

    kg = ShopKG(config=config, train=strings(which == 0), valid=strings(which == 1),
                test=strings(which == 2), entity_types=dict(zip(name_list, types)))
    logger.info("generated shop KG: %d entities, %d/%d/%d train/valid/test triples in %.2f s", n_ent,
                len(kg.train), len(kg.valid), len(kg.test), time.perf_counter() - start)
    return kg


def _split(config: ShopConfig, rel: np.ndarray, head: np.ndarray, tail: np.ndarray, n_ent: int) -> np.ndarray:
    """Split label per triple (0 train, 1 valid, 2 test), shape: (n_triples,). Eval relations split
    ~90/5/5; then, for each entity missing from train, one of its eval triples moves to train."""
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, GENERATOR_VERSION, 1]))
    which = np.zeros(rel.size, np.int8)
    for name in EVAL_RELATIONS:
        idx = np.flatnonzero(rel == RELATIONS.index(name))
        perm = idx[rng.permutation(idx.size)]
        n_valid, n_test = round(idx.size * config.valid_fraction), round(idx.size * config.test_fraction)
        which[perm[:n_valid]], which[perm[n_valid:n_valid + n_test]] = 1, 2
    while True:  # one pass fixes every missing entity; the second confirms
        in_train = np.zeros(n_ent, bool)
        in_train[head[which == 0]] = in_train[tail[which == 0]] = True
        held = np.flatnonzero(which != 0)
        bad_h, bad_t = held[~in_train[head[held]]], held[~in_train[tail[held]]]
        if bad_h.size + bad_t.size == 0:
            return which
        _, first = np.unique(np.concatenate([head[bad_h], tail[bad_t]]), return_index=True)
        which[np.concatenate([bad_h, bad_t])[first]] = 0


def _triples_text(triples: np.ndarray) -> str:
    return "".join((triples[:, 0] + "\t" + triples[:, 1] + "\t" + triples[:, 2] + "\n").tolist())


def _readme(kg: ShopKG) -> str:
    lines = ["# Synthetic shop knowledge graph", "",
             f"Generated by `kgedge.data.generate` (generator version {GENERATOR_VERSION}); the same "
             "config always gives byte-identical files.", "",
             "| config field | value |", "|---|---|"]
    lines += [f"| {k} | {v!r} |" for k, v in asdict(kg.config).items()]
    lines += ["", "| relation | head -> tail | train | valid | test |", "|---|---|---:|---:|---:|"]
    n = [Counter(split[:, 1].tolist()) for split in (kg.train, kg.valid, kg.test)]
    lines += [f"| {r} | {'/'.join(h)} -> {'/'.join(t)} | {n[0][r]} | {n[1][r]} | {n[2][r]} |"
              for r, (h, t) in RELATION_SCHEMA.items()]
    types = Counter(kg.entity_types.values())
    lines += ["", "Entities: " + ", ".join(f"{types[t]} {t}" for t in ENTITY_TYPES) + ".", "",
              "Files: `train.txt`, `valid.txt`, `test.txt` (`head<TAB>relation<TAB>tail`), "
              "`entity_types.tsv` (`entity<TAB>type`). Every valid/test entity occurs in train.", ""]
    return "\n".join(lines)


def write_shop_kg(kg: ShopKG, out_dir: Path, overwrite: bool = False) -> None:
    """Write the split files, ``entity_types.tsv`` and ``README.md`` into ``out_dir`` atomically.

    Files go to a temporary sibling directory that is then renamed into place, so readers never see
    a half-written dataset. Raises FileExistsError if ``out_dir`` is non-empty and not ``overwrite``.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise FileExistsError(f"{out_dir} is a file, not a directory; choose a directory path")
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise FileExistsError(f"{out_dir} exists and is not empty; choose another directory, empty it, "
                              "or pass overwrite=True to replace it")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    old: Path | None = None
    try:
        texts = {"train.txt": _triples_text(kg.train), "valid.txt": _triples_text(kg.valid),
                 "test.txt": _triples_text(kg.test), "README.md": _readme(kg),
                 "entity_types.tsv": "".join(f"{e}\t{t}\n" for e, t in kg.entity_types.items())}
        for name, text in texts.items():
            (tmp / name).write_text(text, encoding="utf-8", newline="\n")
        tmp.chmod(0o755)  # mkdtemp makes 0o700; a dataset directory should be readable
        if out_dir.exists():  # move the old one aside: os.replace cannot replace a non-empty directory
            old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
            os.replace(out_dir, old / "data")
        try:
            os.replace(tmp, out_dir)
        except BaseException:
            if old is not None:
                os.replace(old / "data", out_dir)  # put the previous dataset back
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and (old / "data").exists():
            logger.error("could not restore %s; the previous dataset is in %s", out_dir, old / "data")
        elif old is not None:
            old.rmdir()
        raise
    if old is not None:
        shutil.rmtree(old)
    logger.info("wrote shop KG to %s", out_dir)
