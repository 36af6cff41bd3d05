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


def _pyproject(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "pyproject.toml"
    path.write_text(f'[project]\nname = "svc"\n\n[tool.actorflow]\n{body}\n')
    return path


def test_pyproject_settings_sit_between_defaults_and_the_environment(tmp_path: Path) -> None:
    path = _pyproject(
        tmp_path, 'workers = 3\ndurability = "fast"\npreload = ["json"]\nshm_threshold = "2MiB"'
    )
    cfg = EngineConfig.from_sources(env={}, pyproject=path)
    assert (cfg.workers, cfg.durability, cfg.preload) == (3, "fast", ("json",))
    assert cfg.shm_threshold == 2 << 20
    cfg = EngineConfig.from_sources(env={"ACTORFLOW_WORKERS": "4"}, pyproject=path, preload=())
    assert (cfg.workers, cfg.durability, cfg.preload) == (4, "fast", ())  # env, then arguments
    assert EngineConfig.from_sources(env={}, pyproject=False).workers == 0


def test_the_nearest_pyproject_is_found_from_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _pyproject(tmp_path, 'workers = 1\nshards = 2\ndata_dir = "var/store"')
    nested = tmp_path / "src" / "svc"
    nested.mkdir(parents=True)
    monkeypatch.chdir(nested)
    engine = af.Engine()
    assert (engine.config.workers, engine.config.shards) == (1, 2)
    assert engine.config.data_dir == tmp_path / "var" / "store"  # relative to the file


def test_bad_pyproject_settings_name_the_file_and_the_field(tmp_path: Path) -> None:
    path = _pyproject(tmp_path, "wrokers = 2")
    with pytest.raises(
        af.ConfigError, match=r"pyproject.toml \[tool.actorflow\]: unknown.*wrokers"
    ):
        EngineConfig.from_sources(env={}, pyproject=path)
    path = _pyproject(tmp_path, 'durability = "maybe"')
    with pytest.raises(af.ConfigError, match=r"durability: expected .*pyproject.toml"):
        EngineConfig.from_sources(env={}, pyproject=path)
    path.write_text("[tool.actorflow\nworkers = 2\n")
    with pytest.raises(af.ConfigError, match="not valid TOML"):
        EngineConfig.from_sources(env={}, pyproject=path)


def test_max_run_depth_from_the_environment_and_its_bounds() -> None:
    assert EngineConfig().max_run_depth == 64
    env = {"ACTORFLOW_MAX_RUN_DEPTH": "8"}
    assert EngineConfig.from_sources(env=env, pyproject=False).max_run_depth == 8
    assert EngineConfig(max_run_depth=0).max_run_depth == 0  # no limit
    with pytest.raises(af.ConfigError, match=r"max_run_depth: expected an integer >= 0"):
        EngineConfig(max_run_depth=-1)
    with pytest.raises(af.ConfigError, match=r"max_run_depth: expected an integer >= 0"):
        EngineConfig(max_run_depth=True)
    with pytest.raises(af.ConfigError, match="ACTORFLOW_MAX_RUN_DEPTH: expected an int"):
        EngineConfig.from_sources(env={"ACTORFLOW_MAX_RUN_DEPTH": "deep"}, pyproject=False)
