"""A small helper to write ONNX graphs by hand: unique names, constants, common idioms."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


class GraphBuilder:
    """Collects nodes and initializers; ``op`` returns the name of the (first) output."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._count = 0

    def _name(self, hint: str) -> str:
        self._count += 1
        return f"{hint}_{self._count}"

    def const(self, value: np.ndarray | float | int, name: str | None = None) -> str:
        array = np.asarray(value)
        name = name or self._name("c")
        self.initializers.append(numpy_helper.from_array(array, name))
        return name

    def op(self, op_type: str, *inputs: str, outputs: int = 1, name: str | None = None, **attrs: object) -> str:
        """Add a node; returns its first output (see :meth:`op_multi` for all outputs)."""
        return self.op_multi(op_type, *inputs, outputs=outputs, name=name, **attrs)[0]

    def op_multi(
        self, op_type: str, *inputs: str, outputs: int = 1, name: str | None = None, **attrs: object
    ) -> list[str]:
        outs = [name] if name and outputs == 1 else [self._name(op_type.lower()) for _ in range(outputs)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, **attrs))
        return outs

    def branch(self) -> GraphBuilder:
        """A builder for a subgraph (an ``If`` branch) that shares this one's names, so that nothing
        it adds shadows a name of the outer graph; its nodes may read the outer graph's values."""
        sub = GraphBuilder()
        sub._name = self._name  # type: ignore[method-assign]
        return sub

    def subgraph(self, outputs: list[tuple[str, int]], name: str) -> onnx.GraphProto:
        """This builder's nodes and constants as a graph with ``outputs`` (name, element type)."""
        values = [helper.make_tensor_value_info(output, elem_type, None) for output, elem_type in outputs]
        return helper.make_graph(self.nodes, name, [], values, self.initializers)

    def rename(self, value: str, name: str) -> None:
        """Give the value ``value`` (a node output of this graph) the name ``name``, wherever it is used."""
        for node in self.nodes:
            for field in (node.input, node.output):
                for i, existing in enumerate(field):
                    if existing == value:
                        field[i] = name

    def slice_last(self, x: str, start: int, end: int) -> str:
        """``x[..., start:end]``."""
        return self.op("Slice", x, self.const(np.array([start], np.int64)),
                       self.const(np.array([end], np.int64)), self.const(np.array([-1], np.int64)))

    def unsqueeze(self, x: str, axis: int) -> str:
        return self.op("Unsqueeze", x, self.const(np.array([axis], np.int64)))

    def build(
        self, inputs: list[onnx.ValueInfoProto], outputs: list[onnx.ValueInfoProto], opset: int, name: str
    ) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, name, inputs, outputs, self.initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="kgedge")
        model.ir_version = min(model.ir_version, 9)  # readable by onnxruntime >= 1.16
        return model


def tensor_input(name: str, elem_type: int, shape: list[str | int]) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem_type, shape)


INT64 = TensorProto.INT64
INT32 = TensorProto.INT32
FLOAT = TensorProto.FLOAT
BOOL = TensorProto.BOOL
