"""The built-in passes of nircomp (installed as `nircomp.passes`); importing registers them."""
from nircomp.passes import (  # noqa: F401
    canonicalize,
    checks,
    connectivity,
    fuse,
    hardware,
    recurrence,
    select_solver,
    shapes,
    verify,
)
