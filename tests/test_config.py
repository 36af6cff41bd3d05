from __future__ import annotations

from pathlib import Path

import pytest

import actorflow as af
from actorflow.config import EngineConfig


def test_defaults_env_and_arguments() -> None:
    env = {"ACTORFLOW_DURABILITY": "fast", "ACTORFLOW_WORKERS": "3", "ACTORFLOW_DATA_DIR": "/x"}
    cfg = EngineConfig.from_sources(env=env)
    assert (cfg.durability, cfg.workers, cfg.data_dir) == ("fast", 3, Path("/x"))
    cfg = EngineConfig.from_sources(env=env, workers=5, data_dir=None)  # arguments win
    assert cfg.workers == 5 and cfg.data_dir == Path("/x")
    assert EngineConfig.from_sources(env={"ACTORFLOW_WORKERS": "auto"}).worker_count >= 1
    assert EngineConfig.from_sources(env={}, preload="json,math").preload == ("json", "math")


def test_bad_settings_name_the_field() -> None:
    with pytest.raises(af.ConfigError, match="durability: expected 'sync' or 'fast'"):
        af.Engine(durability="maybe")
    with pytest.raises(af.ConfigError, match="workers: expected an integer >= 0"):
        af.Engine(workers=-1)
    with pytest.raises(af.ConfigError, match="kill_grace: expected a positive number"):
        af.Engine(kill_grace=0)
    with pytest.raises(af.ConfigError, match="ACTORFLOW_WORKERS: expected an int"):
        EngineConfig.from_sources(env={"ACTORFLOW_WORKERS": "many"})
    with pytest.raises(af.ConfigError, match=r"unknown engine setting.*wrokers"):
        af.Engine(wrokers=2)
