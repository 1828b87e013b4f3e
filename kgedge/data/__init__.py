"""Knowledge-graph data: TSV reading, vocabularies, splits, known-triple index, demo generator.

Torch-free on purpose: ``kgedge data ...`` and bundle evaluation work on an edge install.
"""

from kgedge.data.kg import KnowledgeGraph, load_kg
from kgedge.data.tsv import KGFormatError, read_triples

__all__ = ["KGFormatError", "KnowledgeGraph", "load_kg", "read_triples"]
