"""Golden tests of `nircomp inspect --print-after-all` on the three example graphs.

The golden files pin the structure each pass leaves (which nodes, edges, kinds, shapes and origins),
not numerics. Their first line is the pipeline. Regenerate with `pytest --update-golden` and review
the diff: each change must be explained by a change of a pass's rule.
"""

from __future__ import annotations

import re

import pytest
from conftest import EXAMPLES, ROOT

GOLDEN = ROOT / "tests" / "golden"
PIPELINE = "verify,infer-shapes,canonicalize,mark-recurrence,fuse-affine-cubalif,select-solver{solver=auto}"


def _normalise(text: str) -> str:
    return re.sub(r"\(\d+\.\d ms;", "(<t> ms;", text)


@pytest.mark.parametrize("name", ["conv_net", "recurrent_subgraph", "cubalif_chain"])
def test_print_after_all_golden(name, cli, update_golden):
    """Each pass's effect on the example graph is exactly the reviewed golden text."""
    res = cli("inspect", EXAMPLES / f"{name}.nir", "--pipeline", PIPELINE, "--print-after-all")
    assert res.returncode == 0, res.stderr
    got = f"// pipeline: {PIPELINE}\n" + _normalise(res.stdout)
    path = GOLDEN / f"{name}.print-after-all.txt"
    if update_golden:
        path.write_text(got)
    assert path.exists(), f"missing golden file {path}; run pytest --update-golden and review it"
    assert got == path.read_text()


def test_golden_files_show_each_pass():
    """Every golden file has one IR dump after load and one per pass of its pipeline, in order."""
    for path in GOLDEN.glob("*.print-after-all.txt"):
        text = path.read_text()
        pipeline = text.splitlines()[0].removeprefix("// pipeline: ")
        headers = re.findall(r"^// -----// IR after (\S+)", text, flags=re.M)
        assert headers == ["load"] + pipeline.split(",")[:-1] + ["select-solver{solver=auto}"]
