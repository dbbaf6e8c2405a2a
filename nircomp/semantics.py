"""Discretisation semantics of the step solver: every choice a named option, bundled in conventions.

NIR fixes continuous-time equations, not their discretisation, and the simulators that export it
disagree. `Semantics` names each choice; a convention (`"nir"`, the default, or a peer preset) is a small
table of option values, and individual options override it:

    resolve_semantics("snntorch", method="exact")
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from nircomp.errors import CompileError


@dataclass(frozen=True)
class Semantics:
    """The resolved options of the step solver (hashable: it is static structure of the compiled model).

    method: "euler" (forward Euler, the NIR paper's reference simulators) or "exact" (exact integration of
        the linear sub-threshold dynamics for input held constant over a step).
    cuba_order: "current-first": the membrane of CubaLI/CubaLIF is driven by this step's updated current;
        "voltage-first": by the previous step's current (NIR's debug reference for CubaLIF).
    reset: "value" (v = v_reset), "subtract" (v -= v_threshold - v_reset) or "none".
    reset_timing: "same-step" (spike and reset in the step that crosses) or "next-step" (the reset of a
        spike is applied at the following step's update, as snnTorch does).
    threshold: "gt" (spike when v > v_threshold, NIR) or "ge" (v >= v_threshold).
    spike: "unit" (amplitude 1) or "dirac" (amplitude 1/dt, so dt -> 0 converges to Dirac pulses).
    spike_count: "single" (at most one spike per step) or "multi" (floor((v - v_reset)/(v_th - v_reset))
        spikes per step, each subtracting one threshold, as sinabs' multi-spike neurons).
    honour_r / honour_w_in / honour_v_leak: whether r, w_in, v_leak are used (False = taken as 1, 1, 0, as
        some importers silently do).
    input_scale: "dt/tau" (v += dt/tau * r x, NIR) or "one" (v += r x: input not scaled by dt/tau, as
        importers that map tau to a decay factor beta = 1 - dt/tau do).
    surrogate, slope: the surrogate derivative of the spike function for gradients ("superspike",
        "fast-sigmoid", "arctan", "sigmoid"); the forward pass is unaffected.
    forward: "heaviside" (spikes are 0/1) or "smooth" (the spike function is sigmoid(slope * x) in the
        forward pass too, so gradients are exact derivatives: for checking gradients, not for simulation).
    """

    method: Literal["euler", "exact"] = "euler"
    cuba_order: Literal["current-first", "voltage-first"] = "current-first"
    reset: Literal["value", "subtract", "none"] = "value"
    reset_timing: Literal["same-step", "next-step"] = "same-step"
    threshold: Literal["gt", "ge"] = "gt"
    spike: Literal["unit", "dirac"] = "unit"
    spike_count: Literal["single", "multi"] = "single"
    honour_r: bool = True
    honour_w_in: bool = True
    honour_v_leak: bool = True
    input_scale: Literal["dt/tau", "one"] = "dt/tau"
    surrogate: Literal["superspike", "fast-sigmoid", "arctan", "sigmoid"] = "superspike"
    slope: float = 25.0
    forward: Literal["heaviside", "smooth"] = "heaviside"

    def describe(self) -> str:
        return ", ".join(f"{f.name}={getattr(self, f.name)}" for f in dataclasses.fields(self))


# A convention is a table of option values; fields not listed keep the defaults above (= "nir").
CONVENTIONS: dict[str, dict[str, Any]] = {
    "nir": {},
    "nir-explicit": {"cuba_order": "voltage-first"},
}


def resolve_semantics(convention: str = "nir", **overrides: Any) -> Semantics:
    """The Semantics of a named convention with individual options overriding it."""
    if convention not in CONVENTIONS:
        raise CompileError(f"unknown convention {convention!r}; known: {', '.join(CONVENTIONS)}")
    values = {**CONVENTIONS[convention], **overrides}
    fields = {f.name: f for f in dataclasses.fields(Semantics)}
    for key, value in values.items():
        if key not in fields:
            raise CompileError(f"unknown step-solver option {key!r}; options: {', '.join(fields)}")
        choices = getattr(fields[key].type, "__args__", None)
        if isinstance(fields[key].type, str) and fields[key].type.startswith("Literal"):
            choices = tuple(s.strip().strip("'\"") for s in fields[key].type[8:-1].split(","))
        if choices and all(isinstance(c, str) for c in choices) and value not in choices:
            raise CompileError(f"option {key}={value!r} is not one of {', '.join(choices)}")
    return Semantics(**values)
