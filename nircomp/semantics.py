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
from nircomp.ops import NEURON_KINDS


@dataclass(frozen=True)
class Semantics:
    """The resolved options of the step solver (hashable: it is static structure of the compiled model).

    method: "euler" (forward Euler, the NIR paper's reference simulators) or "exact" (exact integration of
        the linear sub-threshold dynamics for input held constant over a step).
    cuba_order: "current-first": the membrane of CubaLI/CubaLIF is driven by this step's updated current;
        "voltage-first": by the previous step's current (NIR's debug reference for CubaLIF).
    reset: "value" (v = v_reset), "subtract" (v -= v_threshold - v_reset) or "none".
    reset_timing: "same-step" (spike and reset in the step that crosses) or "next-step" (the reset of a
        spike is applied at the following step's update, as snnTorch's neurons do by default).
    threshold: "gt" (spike when v > v_threshold, NIR) or "ge" (v >= v_threshold).
    spike: "unit" (amplitude 1) or "dirac" (amplitude 1/dt, so dt -> 0 converges to Dirac pulses).
    spike_count: "single" (at most one spike per step) or "multi" (floor((v - v_reset)/(v_th - v_reset))
        spikes per step, each subtracting one threshold, as sinabs' multi-spike neurons).
    honour_r / honour_w_in / honour_v_leak / honour_v_reset: whether r, w_in, v_leak, v_reset are used
        (False = taken as 1, 1, 0, 0, as some importers silently do); honour_r may also be the tuple of
        neuron kinds that use r (Norse: only "CubaLIF").
    init: "zero" (state starts at 0) or "v_leak" (membranes start at v_leak and synaptic currents at their
        leak target, as Norse's cells do).
    syn_leak: "zero" (the synaptic current of CubaLI/CubaLIF relaxes to w_in x, NIR) or "v_leak" (to
        v_leak + w_in x: Norse builds the synapse as a leaky integrator with the neuron's v_leak).
    input_scale: "dt/tau" (v += dt/tau * r x, NIR) or "one" (v += r x: input not scaled by dt/tau, as
        importers that map tau to a decay factor beta = 1 - dt/tau do).
    surrogate, slope: the surrogate derivative of the spike function for gradients ("superspike",
        "fast-sigmoid", "arctan", "sigmoid"); the forward pass is unaffected.
    fire_timing: "after-update" (a neuron emits the spike of this step's membrane) or "before-update" (it
        emits the threshold test of its membrane before this step's input, i.e. the previous step's spike:
        every spiking neuron delays its output one step, as spyx's neurons; use with reset_timing="next-step").
    reset_after_leak: the spiking kinds ("IF", "LIF", "CubaLIF") whose next-step reset is subtracted after
        the step's leak and input, so the leak does not decay it (snnTorch; spyx's LIF); the others subtract
        it first and it decays with the membrane (spyx's CuBaLIF).
    flatten_order: "channels-first" (NIR) or "channels-last": a Flatten of a [C, H, W] tensor lays it out
        as [H, W, C], as spyx, which runs convolutions channels-last, does while declaring NIR shapes.
    forward: "heaviside" (spikes are 0/1) or "smooth" (the spike function is sigmoid(slope * x) in the
        forward pass too, so gradients are exact derivatives: for checking gradients, not for simulation).
    v_floor: the spiking kinds whose membrane is clipped from below at -v_threshold after each step's
        reset (sinabs imports IF as an IAF with min_v_mem = -v_threshold).
    decayed_input: the leaky kinds whose input (with input_scale="one") is added before the step's decay,
        so it decays in its own step: v = a (v + x) (rockpool's ExpSyn; for CubaLI/CubaLIF it is the
        synaptic current that takes its input so, as rockpool's LIFTorch does).
    v_leak_as: "rest" (v relaxes to v_leak, NIR) or "bias" (v_leak is a constant input added with the
        input: v = a v + r x + v_leak under input_scale="one", as rockpool's bias current).
    layer_dt: "global" (every neuron steps by the compile dt) or "tau/(1+r)": each leaky neuron node steps
        by the smallest tau/(1 + r) (tau_mem for CubaLI/CubaLIF) over its neurons, whatever the compile
        dt (rockpool's importer derives each module's dt so).
    """

    method: Literal["euler", "exact"] = "euler"
    cuba_order: Literal["current-first", "voltage-first"] = "current-first"
    reset: Literal["value", "subtract", "none"] = "value"
    reset_timing: Literal["same-step", "next-step"] = "same-step"
    threshold: Literal["gt", "ge"] = "gt"
    spike: Literal["unit", "dirac"] = "unit"
    spike_count: Literal["single", "multi"] = "single"
    honour_r: bool | tuple[str, ...] = True
    honour_w_in: bool = True
    honour_v_leak: bool = True
    honour_v_reset: bool = True
    input_scale: Literal["dt/tau", "one"] = "dt/tau"
    surrogate: Literal["superspike", "fast-sigmoid", "arctan", "sigmoid"] = "superspike"
    slope: float = 25.0
    forward: Literal["heaviside", "smooth"] = "heaviside"
    fire_timing: Literal["after-update", "before-update"] = "after-update"
    reset_after_leak: tuple[str, ...] = ()
    flatten_order: Literal["channels-first", "channels-last"] = "channels-first"
    init: Literal["zero", "v_leak"] = "zero"
    syn_leak: Literal["zero", "v_leak"] = "zero"
    v_floor: tuple[str, ...] = ()
    decayed_input: tuple[str, ...] = ()
    v_leak_as: Literal["rest", "bias"] = "rest"
    layer_dt: Literal["global", "tau/(1+r)"] = "global"

    def describe(self) -> str:
        return ", ".join(f"{f.name}={getattr(self, f.name)}" for f in dataclasses.fields(self))


# A convention is a table of option values; fields not listed keep the defaults above (= "nir").
CONVENTIONS: dict[str, dict[str, Any]] = {
    "nir": {},
    "nir-explicit": {"cuba_order": "voltage-first"},
    # snntorch.import_nir (snnTorch 1.0): beta = 1 - dt/tau, reset to zero in the crossing step
    # (reset_delay=False), spike when mem > threshold; it hard-codes dt = 1e-4 (docs/peers/snntorch.md).
    "snntorch": {"method": "euler", "cuba_order": "current-first", "reset": "value", "reset_timing": "same-step",
                 "threshold": "gt", "input_scale": "dt/tau", "honour_v_reset": False},
    # norse.torch.from_nir (Norse 1.1): Euler box cells, reset to 0 in the crossing step, spike when v > v_th;
    # LIF/IF ignore r, v_reset is never passed, the CubaLIF synapse is a leaky integrator with the neuron's
    # v_leak, and cells start at v_leak; SuperSpike with slope 1 (docs/peers/norse.md).
    "norse": {"method": "euler", "cuba_order": "current-first", "reset": "value", "reset_timing": "same-step",
              "threshold": "gt", "input_scale": "dt/tau", "honour_r": ("CubaLIF",), "honour_v_reset": False,
              "init": "v_leak", "syn_leak": "v_leak", "surrogate": "superspike", "slope": 1.0},
    # spyx.nir.from_nir (spyx 1.0): decays beta = 1 - dt/tau with unscaled input; a neuron emits the test
    # v > v_th of its membrane before the step and subtracts v_th in that update (LIF after its leak, CuBaLIF
    # before); r, w_in, v_leak, v_reset ignored; flattens channels-last (docs/peers/spyx.md).
    "spyx": {"method": "euler", "cuba_order": "current-first", "reset": "subtract", "reset_timing": "next-step",
             "reset_after_leak": ("LIF",), "fire_timing": "before-update", "threshold": "gt", "spike": "unit",
             "input_scale": "one", "honour_r": False, "honour_w_in": False, "honour_v_leak": False,
             "honour_v_reset": False, "flatten_order": "channels-last", "surrogate": "superspike", "slope": 25.0},
    # sinabs.from_nir (sinabs 3.1): LIF/IF/LI read tau in time steps, decay exp(-1/tau), input unscaled;
    # MultiSpike (floor(v / v_th) spikes per step), MembraneSubtract in the same step; r and v_reset
    # ignored; IF clipped below at -v_threshold (min_v_mem); compile at dt=1 (docs/peers/sinabs.md).
    "sinabs": {"method": "exact", "input_scale": "one", "reset": "subtract", "reset_timing": "same-step",
               "threshold": "ge", "spike": "unit", "spike_count": "multi", "honour_r": False,
               "honour_v_reset": False, "v_floor": ("IF",)},
    # rockpool.nn.modules.from_nir (rockpool 3.1): CubaLIF -> LIFTorch, LI -> ExpSynTorch; decays
    # exp(-dt/tau) with dt = min(tau/(1+r)) per module; i = beta (i + x), v = alpha v + i + v_leak (a bias);
    # floor(v / v_th) spikes per step when v >= v_th, subtracted; r, w_in, v_reset ignored (docs/peers/rockpool.md).
    "rockpool": {"method": "exact", "cuba_order": "current-first", "input_scale": "one", "reset": "subtract",
                 "reset_timing": "same-step", "threshold": "ge", "spike": "unit", "spike_count": "multi",
                 "honour_r": False, "honour_w_in": False, "honour_v_reset": False, "v_leak_as": "bias",
                 "decayed_input": ("LI", "CubaLIF"), "layer_dt": "tau/(1+r)"},
}


# Conventions whose peer importer hard-codes the time step: the preset reproduces the peer only at that dt.
CONVENTION_DT: dict[str, float] = {"snntorch": 1e-4, "sinabs": 1.0}


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
    for key, allowed in (("reset_after_leak", ("IF", "LIF", "CubaLIF")), ("v_floor", ("IF", "LIF", "CubaLIF")),
                         ("decayed_input", ("LI", "LIF", "CubaLI", "CubaLIF"))):
        if key in values:
            kinds = values[key] = tuple(values[key])
            if not set(kinds) <= set(allowed):
                raise CompileError(f"option {key}={kinds!r} may name only {', '.join(allowed)}")
    if not isinstance(values.get("honour_r", True), bool):
        kinds = values["honour_r"] = tuple(values["honour_r"])
        if not set(kinds) <= set(NEURON_KINDS):
            raise CompileError(f"option honour_r={kinds!r} may name only neuron kinds ({', '.join(NEURON_KINDS)})")
    return Semantics(**values)
