"""The base of graph-neural teachers: an encoder over the training graph, then a KG-embedding decoder.

A graph model is a :class:`~kgedge.models.base.KGModel` whose candidate table is the encoder's output
``Z = enc(E, G)`` (``E`` the learned input embeddings, ``G`` the training graph with reciprocal edges)
and whose query is a plain model's (:mod:`kgedge.models.decoders`) on rows of ``Z``. Training,
losses, evaluation and checkpoints therefore work unchanged. The graph is stored as buffers whose
size is ``config.options["num_edges"]``, so a checkpoint reloads with ``build(config)`` and
``load_state_dict(strict=True)``; :func:`attach_graph` fills (and if needed resizes) them.

Encoding is full-graph by default: one pass per optimizer step serves the whole batch (the table is
cached until the parameters change or the backward pass has consumed it) and one pass serves a whole
evaluation. With ``fanouts`` set, training with a negative-sampling loss encodes only the rows a
batch touches, over neighbour-sampled subgraphs (:mod:`kgedge.models.sampling`), for graphs too big
to encode every step; evaluation and export still encode the full graph. :func:`materialized_checkpoint` turns a trained model into the plain decoder model,
which is what is exported to ONNX and distilled: the device never runs message passing.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from kgedge.data.kg import KnowledgeGraph
from kgedge.models.base import KGModel, ModelConfig
from kgedge.models.decoders import DECODERS, Decoder, resolve_decoder
from kgedge.models.rotate import accept_phase_tables
from kgedge.models.sampling import NeighbourSampler

log = logging.getLogger(__name__)

Activation = Literal["relu", "tanh", "none"]
ACTIVATIONS: dict[str, nn.Module] = {"relu": nn.ReLU(), "tanh": nn.Tanh(), "none": nn.Identity()}


@dataclass(frozen=True)
class GraphOptions:
    """Encoder settings shared by every graph model, read from ``ModelConfig.options``.

    Attributes:
        decoder: the KG-embedding decoder (``distmult``, ``complex``, ``transe``, ``rotate``).
        num_layers: message-passing layers; each reaches one hop further.
        activation: between layers (the last layer's output is linear, like an embedding).
        hidden_dropout: dropout on the input and hidden node states during training.
        residual: the table is ``E + enc(E)``, so the model starts as, and can fall back to, its
            decoder alone; without it, a KG's many low-degree entities are over-smoothed.
        num_edges: edges of the stored graph (train triples and reciprocals); set by
            :func:`attach_graph`, read back from checkpoints.
        fanouts: in-edges sampled per node and layer during training, outermost hop last (e.g.
            ``[10, 10]`` for two layers); empty = full-graph training. Sampling applies to the
            ``nssa`` loss: the 1-N losses score every entity, which needs the whole table anyway.
    """

    decoder: str = "distmult"
    num_layers: int = 2
    activation: Activation = "tanh"
    hidden_dropout: float = 0.1
    residual: bool = True
    num_edges: int = 0
    fanouts: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.fanouts, list):  # JSON (checkpoints, CLI) gives lists
            object.__setattr__(self, "fanouts", tuple(self.fanouts))
        if (not isinstance(self.fanouts, tuple)
                or not all(isinstance(f, int) and not isinstance(f, bool) and f >= 1 for f in self.fanouts)
                or len(self.fanouts) not in (0, self.num_layers)):
            raise ValueError(f"options.fanouts={self.fanouts!r}; allowed: empty (full graph) or one integer >= 1 "
                             f"per layer ({self.num_layers})")
        if str(self.decoder).lower() not in DECODERS:
            raise ValueError(f"options.decoder={self.decoder!r}; allowed: {', '.join(DECODERS)}")
        if not isinstance(self.num_layers, int) or not 1 <= self.num_layers <= 8:
            raise ValueError(f"options.num_layers={self.num_layers!r}; allowed: an integer from 1 to 8")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"options.activation={self.activation!r}; allowed: {', '.join(ACTIVATIONS)}")
        if not 0.0 <= self.hidden_dropout < 1.0:
            raise ValueError(f"options.hidden_dropout={self.hidden_dropout!r}; allowed: [0, 1)")
        if not isinstance(self.residual, bool):
            raise ValueError(f"options.residual={self.residual!r}; allowed: true or false")
        if not isinstance(self.num_edges, int) or self.num_edges < 0:
            raise ValueError(f"options.num_edges={self.num_edges!r}; allowed: an integer >= 0")

    @classmethod
    def parse(cls, options: dict[str, Any]) -> GraphOptions:
        """Options from a ``ModelConfig.options`` dict; unknown keys are an error that lists the known ones."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(f"unknown option(s) {', '.join(unknown)} for {cls.__name__}; known: {', '.join(sorted(known))}")
        return cls(**options)


class GraphEncoderModel(KGModel):
    """Encoder layers over the stored graph, then a decoder; subclasses provide the layers.

    Subclasses set ``options_class`` and implement :meth:`make_layer` and :meth:`make_graph` (the
    layer-specific precomputation on the edges: sparse structures and normalisations).
    """

    options_class: ClassVar[type[GraphOptions]] = GraphOptions

    def __init__(self, config: ModelConfig) -> None:
        opts = self.options_class.parse(dict(config.options))
        # the decoder fixes the table widths, which KGModel.__init__ reads through entity_width
        self.decoder: Decoder = resolve_decoder(opts.decoder)
        self.interaction = self.decoder.interaction  # type: ignore[misc]  (per instance: chosen decoder)
        self.complex_valued = self.decoder.complex_valued  # type: ignore[misc]
        self.rotation_relations = self.decoder.rotation_relations  # type: ignore[misc]
        super().__init__(replace(config, options=asdict(opts)))
        self.opts = opts
        self.decoder.init_relations(self.relation.weight)
        if self.rotation_relations:
            accept_phase_tables(self, config.dim)
        self.register_buffer("edge_index", torch.zeros(2, opts.num_edges, dtype=torch.long))
        self.register_buffer("edge_type", torch.zeros(opts.num_edges, dtype=torch.long))
        self.layers = nn.ModuleList(self.make_layer(i) for i in range(opts.num_layers))
        self.act = ACTIVATIONS[opts.activation]
        self.hidden_drop = nn.Dropout(opts.hidden_dropout)
        self._graph_key: tuple[int, ...] | None = None
        self._graph: object = None
        self._table_key: tuple[object, ...] | None = None
        self._table: Tensor | None = None
        self._sampler_key: tuple[int, ...] | None = None
        self._sampler: NeighbourSampler | None = None
        self._rows_key: tuple[object, ...] | None = None
        self._rows: list[tuple[Tensor, Tensor]] = []  # (ids, sampled rows) of the current step
        self._warned_full = False

    def make_layer(self, index: int) -> nn.Module:
        """Layer ``index``: a module ``(x (N, W), graph) -> (N, W)``."""
        raise NotImplementedError

    def make_graph(self, src: Tensor, dst: Tensor, rel: Tensor, num_nodes: int | None = None) -> object:
        """What the layers need from the edges ``src -> dst`` of relation ``rel`` (each shape ``(E,)``).

        Args:
            num_nodes: nodes of the graph (a sampled subgraph's); default ``config.num_entities``.
        """
        raise NotImplementedError

    def set_graph(self, edge_index: Tensor, edge_type: Tensor) -> None:
        """Store the graph (resizing the buffers and ``options.num_edges`` when its size differs).

        Args:
            edge_index: shape ``(2, E)`` int64, rows ``(source, destination)``: messages flow source → destination.
            edge_type: shape ``(E,)`` int64 relation ids in ``[0, num_relations)``.
        """
        num_edges = int(edge_type.numel())
        if edge_index.shape != (2, num_edges):
            raise ValueError(f"edge_index of shape {tuple(edge_index.shape)}; expected (2, {num_edges})")
        if num_edges and (int(edge_index.min()) < 0 or int(edge_index.max()) >= self.config.num_entities):
            raise ValueError(f"edge_index holds ids outside [0, {self.config.num_entities})")
        if num_edges and (int(edge_type.min()) < 0 or int(edge_type.max()) >= self.config.num_relations):
            raise ValueError(f"edge_type holds ids outside [0, {self.config.num_relations})")
        device = self.edge_index.device
        if num_edges != self.opts.num_edges:
            self.opts = replace(self.opts, num_edges=num_edges)
            self.config = replace(self.config, options=asdict(self.opts))
            self.edge_index = torch.zeros(2, num_edges, dtype=torch.long, device=device)
            self.edge_type = torch.zeros(num_edges, dtype=torch.long, device=device)
        with torch.no_grad():
            self.edge_index.copy_(edge_index)
            self.edge_type.copy_(edge_type)

    def graph(self) -> object:
        """The layers' precomputed graph, rebuilt only when the edge buffers change."""
        key = tuple(_identity(t) for t in (self.edge_index, self.edge_type))
        if key != self._graph_key:
            self._graph = self.make_graph(self.edge_index[0], self.edge_index[1], self.edge_type)
            self._graph_key = key
        return self._graph

    def encode(self) -> Tensor:
        """Message passing over the whole graph: ``Z = E + enc(E)`` (or ``enc(E)``), shape ``(N, W)``."""
        return self._encode(self.entity.weight, self.graph())

    def _encode(self, x: Tensor, graph: object) -> Tensor:
        h = self.hidden_drop(x)
        for i, layer in enumerate(self.layers):
            h = layer(h, graph)
            if i < len(self.layers) - 1:
                h = self.hidden_drop(self.act(h))
        return x + h if self.opts.residual else h

    def sampling(self) -> bool:
        """Whether rows are encoded over sampled subgraphs now (training with ``fanouts`` set)."""
        return bool(self.opts.fanouts) and self.training and torch.is_grad_enabled()

    def entity_rows(self, ids: Tensor) -> Tensor:
        """Encoded rows of ``ids`` (any shape), shape ``(*ids.shape, W)``: rows of the full-graph table,
        or, while :meth:`sampling`, encoded over a sampled subgraph.

        Within one optimizer step the same ids get the same rows (a step asks for the heads in each
        scorer and again in the regulariser): rows are kept until the parameters change or backward
        has passed through them, like the full table.
        """
        if not self.sampling():
            return self.entity_table()[ids]
        key = tuple(_identity(t) for t in self._watched())
        if key != self._rows_key:
            self._rows, self._rows_key = [], key
        for seen, rows in self._rows:
            if seen.shape == ids.shape and torch.equal(seen, ids):
                return rows
        rows = self._encode_sampled(ids)
        if rows.requires_grad:
            rows.register_hook(self._forget_rows)
        self._rows.append((ids, rows))
        return rows

    def _forget_rows(self, grad: Tensor) -> None:
        self._rows, self._rows_key = [], None

    def _encode_sampled(self, ids: Tensor) -> Tensor:
        key = tuple(_identity(t) for t in (self.edge_index, self.edge_type))
        if self._sampler is None or key != self._sampler_key:
            self._sampler = NeighbourSampler(self.edge_index.cpu(), self.edge_type.cpu(), self.config.num_entities)
            self._sampler_key = key
        targets, inverse = torch.unique(ids.reshape(-1).cpu(), return_inverse=True)
        sub = self._sampler.sample(targets, self.opts.fanouts)
        device = self.entity.weight.device
        graph = self.make_graph(sub.src.to(device), sub.dst.to(device), sub.rel.to(device), num_nodes=len(sub.nodes))
        z = self._encode(self.entity.weight[sub.nodes.to(device)], graph)[: sub.num_targets]
        return z[inverse.to(device)].reshape(*ids.shape, -1)

    def score_all_tails(self, heads: Tensor, relations: Tensor) -> Tensor:
        if self.sampling() and not self._warned_full:
            log.warning("%s: fanouts apply to negative-sampling losses (--loss nssa); a 1-N loss scores every "
                        "entity, so the whole graph is encoded each step", self.config.model)
            self._warned_full = True
        return super().score_all_tails(heads, relations)

    def entity_table(self) -> Tensor:
        """The encoder's output, cached while the parameters, the mode and the graph are unchanged.

        With gradients on, the cached table is dropped once backward has passed through it, so each
        optimizer step encodes once however many times the loss reads the table.
        """
        key = (self.training, torch.is_grad_enabled(), *(_identity(t) for t in self._watched()))
        if self._table is not None and key == self._table_key:
            return self._table
        table = self.encode()
        if table.requires_grad:
            table.register_hook(self._forget_table)
        self._table, self._table_key = table, key
        return table

    def _watched(self) -> list[Tensor]:
        return [*self.parameters(), *self.buffers()]

    def _forget_table(self, grad: Tensor) -> None:
        self._table, self._table_key = None, None

    def query(self, heads: Tensor, relations: Tensor) -> Tensor:
        return self.decoder.query(self.entity_rows(heads), self.relation(relations))

    def factors(self, heads: Tensor, relations: Tensor, tails: Tensor) -> list[Tensor]:
        return self.decoder.factors(self.entity_rows(heads), self.relation(relations), self.entity_rows(tails))

    def __getstate__(self) -> dict[str, Any]:
        # the caches may hold autograd graphs, which cannot be copied or pickled; they rebuild on use
        state = self.__dict__.copy()
        state.update(_graph=None, _graph_key=None, _table=None, _table_key=None, _sampler=None, _sampler_key=None,
                     _rows=[], _rows_key=None)
        return state

    def _apply(self, fn, recurse: bool = True):  # noqa: ANN001, ANN202 (nn.Module's signature)
        # moving the model (.to(device)) invalidates the derived tensors
        self._graph, self._graph_key, self._table, self._table_key = None, None, None, None
        self._rows, self._rows_key = [], None
        return super()._apply(fn, recurse)


def _identity(t: Tensor) -> tuple[int, int]:
    """Changes when a tensor is replaced (new storage) or modified in place (version counter)."""
    return (t.data_ptr(), t._version)


def graph_edges(kg: KnowledgeGraph) -> tuple[Tensor, Tensor]:
    """The training graph with reciprocal edges: ``edge_index`` ``(2, 2n)`` (head → tail) and ``edge_type`` ``(2n,)``."""
    triples = torch.as_tensor(kg.with_reciprocals(kg.train), dtype=torch.long)
    return triples[:, [0, 2]].T.contiguous(), triples[:, 1].contiguous()


def attach_graph(model: GraphEncoderModel, kg: KnowledgeGraph) -> GraphEncoderModel:
    """Give ``model`` the training graph of ``kg`` (the trainer does this before the first step).

    Raises:
        ValueError: the model was configured for another KG (entity or relation counts differ).
    """
    config = model.config
    if config.num_entities != kg.num_entities or config.num_relations != 2 * kg.num_relations:
        raise ValueError(
            f"{config.model} is configured for {config.num_entities} entities / {config.num_relations} relations "
            f"(with reciprocals), but {kg.name} has {kg.num_entities} / {2 * kg.num_relations}"
        )
    model.set_graph(*graph_edges(kg))
    log.info("attached %s's training graph (%d edges) to %s", kg.name, model.opts.num_edges, config.model)
    return model


def graph_model_config(kg: KnowledgeGraph, name: str, dim: int, **options: Any) -> ModelConfig:
    """A complete ``ModelConfig`` for graph model ``name`` on ``kg`` (``num_edges`` filled in).

    Extra keyword arguments go to ``ModelConfig`` when they are its fields (``init_scale``,
    ``dropout``), otherwise to ``options`` (``decoder``, ``num_layers``, ...).
    """
    from kgedge.models import resolve

    cls = resolve(name)
    if not issubclass(cls, GraphEncoderModel):
        raise ValueError(f"{name!r} is not a graph model; graph models: {', '.join(graph_model_names())}")
    top = {k: options.pop(k) for k in ("init_scale", "dropout") if k in options}
    options["num_edges"] = 2 * len(kg.train)
    opts = cls.options_class.parse(options)
    return ModelConfig(model=name.lower(), num_entities=kg.num_entities, num_relations=2 * kg.num_relations,
                       dim=dim, options=asdict(opts), **top)


def graph_model_names() -> list[str]:
    from kgedge.models import MODELS

    return [name for name, cls in MODELS.items() if issubclass(cls, GraphEncoderModel)]


@torch.no_grad()
def materialize(model: KGModel) -> Tensor:
    """The entity table a student or exporter reads, without message passing at use time.

    Returns:
        shape ``(num_entities, entity_width)``, detached (a copy for graph models).
    """
    was_training = model.training
    model.eval()
    table = model.entity_table().detach().clone()
    model.train(was_training)
    return table


def materialized_checkpoint(model: KGModel) -> tuple[ModelConfig, dict[str, Tensor]]:
    """The plain decoder model equal to ``model``: its config and a ``strict``-loadable state dict.

    For a graph model the config names its decoder (e.g. ``distmult``), the entity table is the
    encoder's output and the relation table is the decoder's; scores are unchanged. A plain model is
    returned as it is (without options).
    """
    config = model.config
    name = model.decoder.name if isinstance(model, GraphEncoderModel) else config.model
    plain = ModelConfig(model=name, num_entities=config.num_entities, num_relations=config.num_relations,
                        dim=config.dim, init_scale=config.init_scale, dropout=config.dropout)
    state = {"entity.weight": materialize(model), "relation.weight": model.relation.weight.detach().clone()}
    return plain, state


def materialized_model(model: KGModel) -> KGModel:
    """:func:`materialized_checkpoint` built into a model (eval mode)."""
    from kgedge.models import build

    config, state = materialized_checkpoint(model)
    plain = build(config)
    plain.load_state_dict(state, strict=True)
    return plain.eval()
