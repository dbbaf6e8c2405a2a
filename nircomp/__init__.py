"""nircomp: a compiler from NIR graphs to executable JAX."""

from nircomp.api import compile as compile, run_passes as run_passes
from nircomp.errors import CompileError as CompileError, LoadWarning as LoadWarning
from nircomp.instruments import PassRecord as PassRecord
from nircomp.ir import Graph as Graph, Op as Op
from nircomp.program import Program as Program
from nircomp.load import load as load, save as save
from nircomp.pipeline import (
    PassContext as PassContext,
    Pipeline as Pipeline,
    register_pass as register_pass,
)
from nircomp.printer import format_graph as format_graph

__version__ = "0.1.0"
