"""``EdgeModel``: a loaded bundle answering ``(head, relation, ?)`` queries and recommendations.

Typical use on a device::

    model = EdgeModel.load("bundle/")                      # or bundle.tar.gz
    model.answer("intent_3", "answers", k=5)               # [(name, score), ...] best first
    model.recommend("user_17", k=10)                       # products the user does not have yet
    model.add_seen("user_17", ["product_4"])               # persisted beside the model

One model may be shared by many threads: the onnxruntime session is thread-safe and the only
mutable state, the seen overlay, is guarded by a lock.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from kgedge.runtime.bundle import Bundle, read_bundle
from kgedge.runtime.compat import saturation_risk
from kgedge.runtime.checks import check_exclude, check_ids, check_k, names_of
from kgedge.runtime.errors import QueryError
from kgedge.runtime.graph import TopKGraph
from kgedge.runtime.seen import SeenIndex, pad_rows
from kgedge.runtime.session import OptimizationLevel, SessionSettings, create_session
from kgedge.runtime.vocab import Vocabulary, relation_vocabulary

log = logging.getLogger(__name__)

Ranked = list[tuple[str, float]]
MAX_CACHED_TYPE_MASKS = 256  # sets of type names whose masks are kept (a few bytes each)


class EdgeModel:
    """A verified bundle with its onnxruntime session; build it with :meth:`load`.

    Attributes:
        entities: entity names by id (``N``), a new list at each access (at 1M entities ~60 MiB and
            ~0.1 s); :meth:`entity_name` and :meth:`entity_id` decode or find one name.
        relations: data relation names by id (``R``); ids ``R..2R-1`` are their inverses, named
            ``NAME^-1`` (``(t, r^-1, ?)`` predicts heads).
        types: entity type names by type id.
        manifest: the bundle's manifest (a copy is not made: do not modify it).
    """

    def __init__(self, bundle: Bundle, settings: SessionSettings) -> None:
        self.source = bundle.source
        self.manifest: dict[str, Any] = bundle.manifest
        self.settings = settings
        # names sorted by the data loader stay in entities.txt's bytes and are found by bisection
        self._entities = Vocabulary("entity", bundle.entities)
        self._data_relations = Vocabulary("relation", bundle.relations)
        self._relations = relation_vocabulary(bundle.relations)
        self._types = Vocabulary("type", bundle.types)
        # the session keeps its own copy of the weights: neither it nor this object keeps bundle.model
        session = create_session(bundle.model, settings, str(bundle.source), len(bundle.types))
        self._graph = TopKGraph(session, bundle.entity_types, len(bundle.types), _cells_per_entity(bundle.manifest))
        self._seen = SeenIndex(bundle.known, self._entities, self._data_relations, bundle.overlay_path)
        # fixed per bundle, asked on every query
        self._num_entities = len(self._entities)
        self._num_relation_ids = 2 * len(self._data_relations)
        self._every_type = self._graph.every_type  # read-only; the graph recognises it without a pass
        self._type_masks: dict[object, tuple[np.ndarray, int, str]] = {}  # see _type_restriction
        for label, text in bundle.overlays:
            self._seen.load_overlay(label, text)

    @classmethod
    def load(cls, path: str | Path, *, intra_op_threads: int | None = None,
             graph_optimization_level: OptimizationLevel | None = None) -> EdgeModel:
        """Load and verify a bundle directory or a ``.tar`` / ``.tar.gz`` of one.

        Every file's size and sha256 are checked before the session is created. Session settings
        come from the manifest; the arguments override them.

        Args:
            intra_op_threads: threads per operator (0 = onnxruntime default).
            graph_optimization_level: ``disable``, ``basic``, ``extended`` or ``all``.

        Raises:
            BundleError: the bundle is malformed, tampered with, or of another format version.
            FileNotFoundError: ``path`` does not exist.
            ValueError: a bad override.
        """
        bundle = read_bundle(Path(path))
        risk = saturation_risk(bundle.manifest.get("profile", {}))
        if risk is not None:
            log.warning("%s: %s", bundle.source, risk)
        settings = SessionSettings.from_manifest(bundle.manifest["session"], str(bundle.source))
        overrides = {"intra_op_threads": intra_op_threads, "graph_optimization_level": graph_optimization_level}
        settings = replace(settings, **{k: v for k, v in overrides.items() if v is not None})
        return cls(bundle, settings)

    # -- names -------------------------------------------------------------------------------
    @property
    def entities(self) -> list[str]:
        return list(self._entities.names)

    @property
    def relations(self) -> list[str]:
        return list(self._data_relations.names)

    @property
    def types(self) -> list[str]:
        return list(self._types.names)

    @property
    def num_entities(self) -> int:
        return self._num_entities

    @property
    def num_relations(self) -> int:
        """``R``, data relations only (the graph accepts ``2R`` relation ids)."""
        return len(self._data_relations)

    @property
    def seen_path(self) -> Path:
        """The overlay file that :meth:`add_seen` writes."""
        return self._seen.path

    def entity_id(self, name: str) -> int:
        """Raises ``UnknownNameError`` (a ``QueryError``) with close matches for unknown names."""
        return self._entities.id(name)

    def entity_name(self, entity_id: int) -> str:
        return self._entities.name(entity_id)

    def relation_id(self, name: str) -> int:
        """Id of a data relation (``0..R-1``) or of an inverse ``NAME^-1`` (``R..2R-1``)."""
        return self._relations.id(name)

    def relation_name(self, relation_id: int) -> str:
        return self._relations.name(relation_id)

    def allowed_types(self, types: str | Sequence[str] | None) -> np.ndarray:
        """Shape ``(T,)`` bool mask of the named types (all True for ``None``)."""
        if types is None:
            return self._every_type.copy()
        mask = np.zeros(len(self._types), dtype=bool)
        mask[[self._types.id(t) for t in names_of(types, "types")]] = True
        return mask

    def _type_restriction(self, types: str | Sequence[str]) -> tuple[np.ndarray, int, str]:
        """The read-only mask of ``types``, how many entities it allows and how an error names them, made
        once per set of names (a serving loop asks for the same few every time; ~15 us of numpy calls each
        time otherwise)."""
        key = types if isinstance(types, str) else tuple(types) if isinstance(types, (list, tuple)) else None
        if key is not None:
            try:
                cached = self._type_masks.get(key)
            except TypeError:  # unhashable names: checked (and refused) below
                cached = None
            if cached is not None:
                return cached
        allowed = self.allowed_types(types)
        allowed.flags.writeable = False
        result = allowed, self._graph.count_allowed(allowed), f"entities of types {names_of(types, 'types')}"
        if key is not None and len(self._type_masks) < MAX_CACHED_TYPE_MASKS:
            self._type_masks[key] = result
        return result

    # -- by id -------------------------------------------------------------------------------
    def topk(self, heads: np.ndarray, relations: np.ndarray, k: int, *, types: str | Sequence[str] | None = None,
             exclude: np.ndarray | Sequence[Sequence[int]] | None = None,
             exclude_seen: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Best ``k`` entities for each ``(heads[i], relations[i], ?)``.

        Args:
            heads: shape ``(B,)`` integer entity ids.
            relations: shape ``(B,)`` integer relation ids ``0..2R-1``.
            k: results per query, ``1..`` the number of entities of the allowed types.
            types: type names that may be returned (``None``: all).
            exclude: per-query entity ids never to return: shape ``(B, X)`` padded with -1, or
                ``B`` ragged sequences.
            exclude_seen: also exclude the query's known tails (train + :meth:`add_seen`).

        Returns:
            ``(ids, scores)`` shape ``(B, k)`` int64 / float32, best first; a row with fewer
            results than ``k`` (everything else excluded) ends with id -1 and score -inf.

        Raises:
            QueryError: non-integer or out-of-range ids, mismatched or empty batch, bad ``k``,
                unknown type, or bad ``exclude``.
        """
        heads = check_ids(heads, "heads", self._num_entities)
        relations = check_ids(relations, "relations", self._num_relation_ids)
        if heads.shape != relations.shape:
            raise QueryError(f"heads {heads.shape} and relations {relations.shape} must have the same length")
        if types is None:  # the common case: no mask to build or count
            allowed, candidates, scope = self._every_type, self._num_entities, "entities"
        else:
            allowed, candidates, scope = self._type_restriction(types)
        k = check_k(k, candidates, scope)
        excluded = check_exclude(exclude, len(heads), self._num_entities)
        if exclude_seen:
            seen = pad_rows(self._seen.lookup(heads, relations))
            excluded = seen if not excluded.shape[1] else np.concatenate([excluded, seen], axis=1)
        return self._graph.topk(heads, relations, k, allowed, excluded)

    def score_all(self, heads: np.ndarray, relations: np.ndarray) -> np.ndarray:
        """Scores of every entity for each query, shape ``(B, N)`` float32 (higher is better).

        Args:
            heads, relations: shape ``(B,)`` integer ids (relations ``0..2R-1``).
        """
        heads = check_ids(heads, "heads", self.num_entities)
        relations = check_ids(relations, "relations", 2 * self.num_relations)
        if heads.shape != relations.shape:
            raise QueryError(f"heads {heads.shape} and relations {relations.shape} must have the same length")
        return self._graph.score_all(heads, relations)

    # -- by name -----------------------------------------------------------------------------
    def _ranked(self, ids: np.ndarray, scores: np.ndarray) -> list[Ranked]:
        names = self._entities.names
        return [[(names[i], float(s)) for i, s in zip(row_ids, row_scores) if i >= 0]
                for row_ids, row_scores in zip(ids.tolist(), scores.tolist())]

    def answer_batch(self, queries: Sequence[tuple[str, str]], k: int = 10, *,
                     types: str | Sequence[str] | None = None, exclude_seen: bool = False) -> list[Ranked]:
        """:meth:`answer` for many ``(head, relation)`` name pairs in one graph run."""
        try:
            pairs = [tuple(q) for q in queries]
        except TypeError:  # not a sequence, or an item that is not a pair
            raise QueryError("queries must be a sequence of (head, relation) pairs of names") from None
        if not pairs:
            raise QueryError("queries is empty; pass at least one (head, relation) pair")
        if any(len(p) != 2 for p in pairs):
            raise QueryError("each query must be a (head, relation) pair of names")
        heads = np.array([self.entity_id(h) for h, _ in pairs], dtype=np.int64)
        relations = np.array([self.relation_id(r) for _, r in pairs], dtype=np.int64)
        return self._ranked(*self.topk(heads, relations, k, types=types, exclude_seen=exclude_seen))

    def answer(self, head: str, relation: str, k: int = 10, *, types: str | Sequence[str] | None = None,
               exclude_seen: bool = False) -> Ranked:
        """Ranked ``(name, score)`` answers of ``(head, relation, ?)``, best first.

        ``relation`` may be an inverse (``bought^-1``: who bought ``head``).
        """
        return self.answer_batch([(head, relation)], k, types=types, exclude_seen=exclude_seen)[0]

    def recommend_batch(self, users: Sequence[str], k: int = 10, exclude_seen: bool = True,
                        types: str | Sequence[str] | None = ("product",), relation: str = "bought") -> list[Ranked]:
        """:meth:`recommend` for many users in one graph run."""
        users = names_of(users, "users")
        return self.answer_batch([(u, relation) for u in users], k, types=types, exclude_seen=exclude_seen)

    def recommend(self, user: str, k: int = 10, exclude_seen: bool = True,
                  types: str | Sequence[str] | None = ("product",), relation: str = "bought") -> Ranked:
        """Top ``k`` items of the given types for ``(user, relation, ?)``.

        With ``exclude_seen`` (default) nothing the user already has is returned: the train facts of
        the bundle and those added with :meth:`add_seen`. Fewer than ``k`` come back only when the
        user already has every other candidate.
        """
        return self.recommend_batch([user], k, exclude_seen, types, relation)[0]

    # -- seen items --------------------------------------------------------------------------
    def add_seen(self, user: str, items: str | Sequence[str], relation: str = "bought") -> int:
        """Record that ``user`` has ``items`` (``(user, relation, item)`` facts) and persist them.

        Written atomically to :attr:`seen_path` (``seen_overlay.tsv`` in the bundle directory, or
        ``ARCHIVE.seen_overlay.tsv`` beside an archive) and honoured by ``exclude_seen`` at once
        and after a reload.

        Returns:
            the number of facts that were new.

        Raises:
            QueryError: an unknown name (nothing is recorded then).
        """
        head = self.entity_id(user)
        rel = self.relation_id(relation)
        ids = [self.entity_id(item) for item in names_of(items, "items")]
        return self._seen.add(head, rel, ids)

    def seen(self, user: str, relation: str = "bought") -> list[str]:
        """Names of what ``user`` has under ``relation`` (train + on-device), sorted by id."""
        ids = self._seen.lookup(np.array([self.entity_id(user)]), np.array([self.relation_id(relation)]))[0]
        return [self._entities.names[i] for i in ids.tolist()]

    def __repr__(self) -> str:
        model = self.manifest.get("model", {})
        return (f"EdgeModel({str(self.source)!r}, model={model.get('name')!r}, entities={self.num_entities}, "
                f"relations={self.num_relations})")


def _cells_per_entity(manifest: dict[str, Any]) -> int:
    """Floats the graph holds per entity and query: the row width for an L1 model (every difference
    ``q - t``), else 1 (one score). The width is the manifest's ``model.width`` (bundles from before it
    existed have no L1 models)."""
    model = manifest["model"]
    if model.get("interaction") != "l1":
        return 1
    width = model.get("width")
    return width if isinstance(width, int) and width > 0 else 1
