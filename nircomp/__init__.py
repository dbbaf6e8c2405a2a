"""nircomp: a compiler from NIR graphs to executable JAX."""

from nircomp.api import compile as compile
from nircomp.api import run_passes as run_passes
from nircomp.errors import CompileError as CompileError
from nircomp.errors import LoadWarning as LoadWarning
from nircomp.events import Events as Events
from nircomp.instruments import PassRecord as PassRecord
from nircomp.ir import Graph as Graph
from nircomp.ir import Op as Op
from nircomp.load import load as load
from nircomp.load import save as save
from nircomp.pipeline import (
    PassContext as PassContext,
)
from nircomp.pipeline import (
    Pipeline as Pipeline,
)
from nircomp.pipeline import (
    register_pass as register_pass,
)
from nircomp.printer import format_graph as format_graph
from nircomp.program import Program as Program
from nircomp.training import train as train

__version__ = "0.1.0"
