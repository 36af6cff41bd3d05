"""A tiny app for ``actorflow tune``'s test (tests/cli/test_tune.py): one fan-out workflow."""

from __future__ import annotations

import actorflow as af
from tests import steps

engine = af.Engine(data_dir=".actorflow-never-used", workers=2)
engine.define("fan").for_each("items", lambda ctx: list(range(int(ctx.payload))), steps.double_item)
