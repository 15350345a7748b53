"""The one place that turns configuration into settings.

Every default lives here, in the models; the top-level `config.toml` documents the
same values with a comment each (a test keeps the two equal). A user's file only
needs the keys it changes. A bad file raises `ConfigError` naming the key.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

CONFIG_ENV = "LOOPMON_CONFIG"
REPO_CONFIG_NAME = "loopmon.toml"


class ConfigError(Exception):
    """A configuration file that cannot be used; the message names the key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BusSettings(_Section):
    endpoint: str = "inproc://loopmon-bus"
    send_timeout_ms: int = Field(default=10_000, ge=0)
    high_water_mark: int = Field(default=100_000, ge=0)
    spool_limit: int = Field(default=200_000, gt=0)
    resend_seconds: float = Field(default=3.0, gt=0)
    heartbeat_seconds: float = Field(default=2.0, gt=0)
    silence_seconds: float = Field(default=10.0, gt=0)
    max_message_bytes: int = Field(default=64 * 1024 * 1024, gt=0)


class StoreSettings(_Section):
    db: str = ".loopmon/loopmon.db"
    flush_ms: int = Field(default=200, gt=0)
    batch_size: int = Field(default=2000, gt=0)


class RoleSettings(_Section):
    """Regular expressions on the commit subject; the first role that matches wins."""

    driver: list[str] = [r"^\[SYNC i=\d+\]"]
    supervisor: list[str] = [r"^SUPERVISOR\b", r"^(?i:galph)\b", r"^\[?supervisor\]?:"]
    engineer: list[str] = [r"^RALPH\b", r"^(?i:ralph)\b", r"^\[[A-Z][A-Z0-9]*(?:-[A-Z0-9]+)+\]"]
    other: list[str] = [
        r"^Merge\b",
        r"^(?i:rebase)\b",
        r"^(?i:wip)\b",
        r"^(?i:update) \S*(?:supervisor|main)\.md",
    ]
    # With no loop markers at all (a single-agent loop), every commit is the engineer's.
    unmatched: str = "engineer"


class IterationSettings(_Section):
    tag_patterns: list[str] = [r"\biter=(\d+)", r"\[SYNC i=(\d+)\]", r"\bi=(\d+)\b"]
    ledger_id_pattern: str = r"\[([A-Z][A-Z0-9]*(?:-[A-Z0-9]+)+)\]"
    quiet_gap_minutes: float = Field(default=10.0, gt=0)
    # Baton and SYNC actor names of each role.
    supervisor_actors: list[str] = ["galph", "supervisor"]
    engineer_actors: list[str] = ["ralph", "engineer"]


class PathSettings(_Section):
    """Ordered classifier: the first class whose globs match a path wins."""

    baton: list[str] = ["sync/**"]
    ledger: list[str] = ["docs/fix_plan.md", "fix_plan.md"]
    brief: list[str] = ["input.md"]
    memory: list[str] = ["galph_memory.md", "*_memory.md"]
    prompt: list[str] = ["prompts/**"]
    artifact: list[str] = [
        ".artifacts/**",
        "**/*.npz",
        "**/*.npy",
        "**/*.h5",
        "**/*.hdf5",
        "**/*.pt",
        "**/*.pth",
        "**/*.ckpt",
        "**/*.bin",
        "**/*.zip",
        "**/*.tar",
        "**/*.tar.gz",
        "**/*.tif",
        "**/*.tiff",
    ]
    hub: list[str] = ["plans/active/*/reports/**", "reports/**"]
    plans: list[str] = ["plans/**"]
    test: list[str] = [
        "tests/**",
        "test/**",
        "**/tests/**",
        "**/test_*.py",
        "**/*_test.py",
        "**/*_test.go",
        "**/*.test.ts",
        "**/*.test.js",
        "**/*.spec.ts",
    ]
    docs: list[str] = ["docs/**", "**/*.md", "**/*.rst", "**/*.txt", "LICENSE*"]
    production: list[str] = [
        "**/*.py",
        "**/*.pyx",
        "**/*.rs",
        "**/*.go",
        "**/*.c",
        "**/*.h",
        "**/*.cc",
        "**/*.cpp",
        "**/*.hpp",
        "**/*.java",
        "**/*.kt",
        "**/*.scala",
        "**/*.js",
        "**/*.ts",
        "**/*.tsx",
        "**/*.jsx",
        "**/*.rb",
        "**/*.jl",
        "**/*.sh",
        "**/*.toml",
        "**/*.cfg",
        "**/*.yaml",
        "**/*.yml",
        "**/*.json",
    ]
    # Helper scripts kept under plans/active/<ID>/bin/: production or not (the audit: not).
    plans_bin_is_production: bool = False


class WatchSettings(_Section):
    ignore: list[str] = [".git/**", ".loopmon/**", "**/__pycache__/**", "**/*.pyc", "**/.pytest_cache/**"]
    respect_gitignore: bool = True
    debounce_ms: int = Field(default=20, ge=0)
    burst_threshold: int = Field(default=200, gt=0)
    baton_retry_ms: int = Field(default=150, ge=0)
    index_lock_stale_seconds: float = Field(default=60.0, gt=0)
    # Where each collector keeps what it last published (relative to the repo; "" = keep nothing).
    state_dir: str = ".loopmon/collector"
    resume_wait_seconds: float = Field(default=5.0, ge=0)


class LoopFileSettings(_Section):
    baton: str = "sync/state.json"
    ledger: list[str] = ["docs/fix_plan.md", "fix_plan.md"]
    brief: str = "input.md"
    memory: str = "galph_memory.md"
    prompts: list[str] = ["prompts/*.md"]
    hubs: list[str] = ["plans/active/*/reports/*", "reports/**/*"]
    hub_stamp_pattern: str = r"^\d{8}T\d{6}Z$|^\d{4}-\d{2}-\d{2}T\d{6}Z$"
    archive: str = "plans/archive"


class ScoreSettings(_Section):
    weights: dict[str, float] = {"summary": 0.3, "code_diff": 0.3, "semantic": 0.4}
    high: int = 75
    medium: int = 40
    git_failure_score: int = 5
    no_code_cap: int = 10
    rolling_window: int = 10

    @field_validator("weights")
    @classmethod
    def _weights(cls, v: dict[str, float]) -> dict[str, float]:
        if set(v) != {"summary", "code_diff", "semantic"}:
            raise ValueError("weights needs exactly summary, code_diff and semantic")
        if abs(sum(v.values()) - 1.0) > 1e-6:
            raise ValueError("weights must add up to 1")
        return v


class DwellSettings(_Section):
    min_code_lines: int = Field(default=5, ge=0)
    tiers: dict[str, int] = {"1": 2, "1.5": 3, "2": 4, "3": 6}
    self_report_tolerance: int = Field(default=2, ge=1)


class AlertSettings(_Section):
    bulky_bytes: int = Field(default=1_000_000, gt=0)
    stalled_seconds: float = Field(default=1800.0, gt=0)
    regression_points: float = 20.0
    regression_window: int = 5
    hub_sprawl: int = 3
    runaway_seconds: float = 60.0
    runaway_count: int = 5
    stale_brief_iterations: int = 3
    stagnation_iterations: int = 10
    ledger_bloat_chars: int = 50_000
    command: list[str] = []  # run on each alert, the alert as JSON on stdin
    command_timeout_seconds: float = Field(default=10.0, gt=0)
    desktop_notify: bool = False
    check_selectors: bool = False  # runs `pytest --collect-only` in the watched repo
    selector_timeout_seconds: float = Field(default=60.0, gt=0)
    selector_command: list[str] = []  # empty: `<this python> -m pytest`
    bulky_ignore: list[str] = []  # globs never reported as bulky artifacts (besides .artifacts/)


class ViewSettings(_Section):
    refresh_per_second: float = Field(default=4.0, gt=0, le=4.0)
    events_tail: int = Field(default=12, gt=0)
    iterations_shown: int = Field(default=20, gt=0)


class CommitSettings(_Section):
    """How much of each commit's diff the commit collector reads for its evidence."""

    refs: list[str] = ["refs/heads/", "refs/remotes/", "refs/tags/"]  # plus HEAD, always
    patch_lines_cap: int = Field(default=20_000, ge=0)
    ast_max_bytes: int = Field(default=512_000, ge=0)
    hashes_cap: int = Field(default=400, ge=0)


class Settings(_Section):
    repo_id: str = ""  # default: the repository folder's name
    bus: BusSettings = BusSettings()
    store: StoreSettings = StoreSettings()
    roles: RoleSettings = RoleSettings()
    iterations: IterationSettings = IterationSettings()
    paths: PathSettings = PathSettings()
    watch: WatchSettings = WatchSettings()
    files: LoopFileSettings = LoopFileSettings()
    scores: ScoreSettings = ScoreSettings()
    dwell: DwellSettings = DwellSettings()
    alerts: AlertSettings = AlertSettings()
    view: ViewSettings = ViewSettings()
    commits: CommitSettings = CommitSettings()


def _format_error(source: str, err: ValidationError) -> str:
    first = err.errors()[0]
    key = ".".join(str(p) for p in first["loc"]) or "(top level)"
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown key"
    more = len(err.errors()) - 1
    tail = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return f"{source}: {key}: {msg}{tail}"


def settings_from_dict(data: dict[str, Any], source: str = "config") -> Settings:
    try:
        return Settings.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_error(source, err)) from None


def load_settings(path: str | os.PathLike[str] | None = None, repo: str | os.PathLike[str] | None = None) -> Settings:
    """Settings from, in order: `path`, $LOOPMON_CONFIG, `<repo>/loopmon.toml`, the defaults."""
    candidates: list[Path] = []
    if path is not None:
        candidates.append(Path(path))
    elif os.environ.get(CONFIG_ENV):
        candidates.append(Path(os.environ[CONFIG_ENV]))
    elif repo is not None and (Path(repo) / REPO_CONFIG_NAME).is_file():
        candidates.append(Path(repo) / REPO_CONFIG_NAME)
    if not candidates:
        return Settings()
    file = candidates[0]
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{file}: no such file") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{file}: not valid TOML: {err}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{file}: not UTF-8 text") from None
    return settings_from_dict(data, str(file))
