"""docs/state-machine.md must show exactly the transitions the code allows."""

from __future__ import annotations

import re

from tests.conftest import REPO
from worker.core.machine import TRANSITIONS

ROW = re.compile(r"^\| ([a-z_]+) \| ([a-z_]+) \| ([a-z_]+) \| .+ \|$")


def test_transition_table_in_docs_matches_the_code() -> None:
    text = (REPO / "docs" / "state-machine.md").read_text()
    documented = {m.groups() for line in text.splitlines() if (m := ROW.match(line))}
    documented.discard(("from", "trigger", "to"))  # the header row
    in_code = {(p.value, t.value, to.value) for (p, t), to in TRANSITIONS.items()}
    assert documented == in_code
