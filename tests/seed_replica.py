"""A replica of the ten iterations the seed audit scored (shared/seed/iteration-audit-report.md).

Paths and line counts are the audit's; where it gives only a total (iteration 305:
16 files, +405/-62) the missing files are filled in to match the total. The diff
evidence is what the commit collector would extract from such hunks, following
the audit's reading of each one: what the tests exercise, which flags are wired
(307: "flag exposed without execution wiring"), which test outcome was reported
(308: the CLI smoke failed on `batch_size`), the git failure of 310.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from monitor.events import DiffEvidence
from scorer_streams import Stream

# iteration -> (summary, code_diff, semantic, aggregate), from the audit.
AUDIT: dict[int, tuple[int, int, int, int]] = {
    302: (20, 0, 15, 10),
    303: (75, 82, 78, 78),
    304: (15, 2, 12, 8),
    305: (68, 75, 72, 72),
    306: (85, 88, 86, 86),
    307: (40, 45, 42, 42),
    308: (50, 55, 52, 52),
    309: (82, 85, 83, 83),
    310: (10, 0, 8, 5),
    311: (92, 95, 93, 93),
}

STUDY = "STUDY-SYNTH-FLY64-DOSE-OVERLAP-001"
TORCH = "INTEGRATE-PYTORCH-001"
EXPORTER = "EXPORTER-RUN1084-001"
STUDY_HUB = f"plans/active/{STUDY}/reports/2025-11-12T010000Z"
TORCH_HUB = f"plans/active/{TORCH}/reports/2025-11-13T150000Z"
EXPORTER_HUB = f"plans/active/{EXPORTER}/reports/2025-11-13T120000Z"


@dataclass
class Turn:
    """One audited iteration: the brief, the supervisor's commit, the engineer's commit."""

    number: int
    focus: str
    mapped: list[str]
    hub: str
    supervisor: str
    engineer: str | None
    files: dict[str, tuple[int, int]] = field(default_factory=dict)
    evidence: DiffEvidence = field(default_factory=DiffEvidence)
    supervisor_files: dict[str, tuple[int, int]] = field(default_factory=dict)
    hub_summary: bool = True
    git_failure: str | None = None


def _bookkeeping(hub: str) -> dict[str, tuple[int, int]]:
    return {"input.md": (28, 26), "galph_memory.md": (6, 0), "docs/fix_plan.md": (9, 3), f"{hub}/plan.md": (14, 0)}


TURNS: list[Turn] = [
    Turn(
        302, STUDY, [], STUDY_HUB,
        f"SUPERVISOR AUTO (prompt=supervisor.md) (iter=00302): [{STUDY}] Tier 3 dwell block on Phase G, pivot to Phase 6 oversampling — tests: not run",
        f"RALPH AUTO (prompt=main.md) (iter=00302): [{STUDY}] reports evidence — tests: not run",
        files={f"{STUDY_HUB}/dwell_escalation_report.md": (64, 0), f"{STUDY_HUB}/summary.md": (12, 0)},
    ),
    Turn(
        303, STUDY, ["tests/test_oversampling.py"], STUDY_HUB,
        f"SUPERVISOR AUTO (prompt=supervisor.md) (iter=00303): [{STUDY}] Phase 6A oversampling guardrails brief — tests: not run",
        f"RALPH AUTO (prompt=main.md) (iter=00303): [{STUDY}] Phase 6A enable_oversampling guards wired through config/CLI — tests: pytest tests/test_oversampling.py -q (6 passed)",
        files={
            "ptycho/config/config.py": (4, 0),
            "ptycho/raw_data.py": (40, 0),
            "scripts/training/train.py": (36, 0),
            "tests/test_oversampling.py": (122, 0),
            f"{STUDY_HUB}/green/pytest_oversampling.log": (40, 0),
        },
        evidence=DiffEvidence(
            symbols_changed=[
                "ptycho/config/config.py::TrainingConfig",
                "ptycho/config/config.py::InferenceConfig",
                "ptycho/raw_data.py::RawData.generate_grouped_data",
                "ptycho/raw_data.py::check_oversampling_preconditions",
                "scripts/training/train.py::parse_arguments",
                "scripts/training/train.py::main",
            ],
            test_functions=["test_enable_oversampling_flag_required", "test_neighbor_pool_size_guard"],
            test_references=["TrainingConfig", "InferenceConfig", "RawData", "generate_grouped_data",
                             "check_oversampling_preconditions", "parse_arguments", "main", "pytest"],
            asserts_added=7,
            flags_added=["enable_oversampling", "neighbor_pool_size"],
            flags_consumed=["enable_oversampling", "neighbor_pool_size"],
            languages=["python"], ast=True,
        ),
    ),
    Turn(
        304, EXPORTER, [], EXPORTER_HUB,
        f"SUPERVISOR AUTO (prompt=supervisor.md) (iter=00304): [{STUDY}] Phase G blocked; pivot to Run1084 exporter evidence — tests: not run",
        f"RALPH AUTO (prompt=main.md) (iter=00304): [{EXPORTER}] exporter evidence notes — tests: not run",
        files={"tests/test_integration_workflow.py": (1, 0), f"{EXPORTER_HUB}/notes.md": (20, 0)},
        evidence=DiffEvidence(test_references=["workflow"], languages=["python"], ast=True),
        hub_summary=False,
    ),
    Turn(
        305, TORCH, ["tests/torch/test_api_persistence.py", "tests/torch/test_config_bridge.py"], TORCH_HUB,
        f"SUPERVISOR AUTO (prompt=supervisor.md) (iter=00305): [{TORCH}] config bridge + save_pytorch persistence — tests: not run",
        f"RALPH AUTO (prompt=main.md) (iter=00305): [{TORCH}] config bridge wiring verified, save_pytorch() persistence shim — tests: pytest tests/torch -q (45 passed)",
        files={
            "ptycho_torch/api/base_api.py": (19, 0),
            "ptycho/custom_layers.py": (32, 10),
            "ptycho/loader.py": (24, 6),
            "ptycho/workflows/components.py": (24, 8),
            "scripts/study/run_dose_study.py": (96, 0),
            "scripts/study/aggregate_study.py": (75, 0),
            "tests/torch/test_api_persistence.py": (40, 0),
            "ptycho_torch/config_params.py": (12, 4),
            "ptycho_torch/model.py": (10, 6),
            "ptycho_torch/train.py": (8, 5),
            "ptycho/params.py": (6, 3),
            "ptycho/model_manager.py": (18, 8),
            "ptycho_torch/api/__init__.py": (2, 0),
            "scripts/study/__init__.py": (1, 0),
            "tests/torch/test_config_bridge.py": (26, 6),
            "tests/conftest.py": (12, 6),
            f"{TORCH_HUB}/green/pytest_torch.log": (60, 0),
        },
        evidence=DiffEvidence(
            symbols_changed=[
                "ptycho_torch/api/base_api.py::PtychoModel.save_pytorch",
                "ptycho/custom_layers.py::CombineComplexLayer.call",
                "ptycho/custom_layers.py::ExtractPatchesPositionLayer.call",
                "ptycho/custom_layers.py::torch_compat_shim",
                "ptycho/loader.py::load_checkpoint",
                "ptycho/workflows/components.py::run_cdi_example",
                "scripts/study/run_dose_study.py::main",
                "scripts/study/run_dose_study.py::build_jobs",
                "scripts/study/aggregate_study.py::main",
                "scripts/study/aggregate_study.py::collect_metrics",
                "ptycho_torch/config_params.py::update_legacy_dict",
                "ptycho_torch/model.py::PtychoPINN.forward",
                "ptycho_torch/train.py::train",
                "ptycho/params.py::set",
                "ptycho/model_manager.py::ModelManager.save_model",
            ],
            test_functions=["test_save_pytorch_roundtrip", "test_load_checkpoint_restores_params", "test_config_bridge_updates_legacy"],
            test_references=["save_pytorch", "load_checkpoint", "update_legacy_dict", "run_cdi_example", "PtychoModel", "tmp_path"],
            asserts_added=9,
            languages=["python"], ast=True,
        ),
    ),
    Turn(
        306, TORCH, ["tests/scripts/test_training_backend_selector.py", "tests/scripts/test_inference_backend_selector.py"], TORCH_HUB,
        f"SUPERVISOR AUTO (prompt=supervisor.md) (iter=00306): [{TORCH}] route CLIs through backend_selector — tests: not run",
        f"RALPH AUTO (prompt=main.md) (iter=00306): [{TORCH}] training/inference CLIs dispatch via backend_selector — tests: pytest tests/scripts -q (5 passed)",
        files={
            "scripts/training/train.py": (19, 4),
            "scripts/inference/inference.py": (9, 3),
            "tests/scripts/test_training_backend_selector.py": (183, 0),
            "tests/scripts/test_inference_backend_selector.py": (188, 0),
            "ptycho/workflows/components.py": (15, 0),
            f"{TORCH_HUB}/green/pytest_backend.log": (30, 0),
        },
        evidence=DiffEvidence(
            symbols_changed=[
                "scripts/training/train.py::main",
                "scripts/inference/inference.py::main",
                "ptycho/workflows/components.py::run_cdi_example_with_backend",
            ],
            test_functions=["test_training_dispatches_tensorflow", "test_training_dispatches_pytorch",
                            "test_inference_dispatches_tensorflow", "test_inference_dispatches_pytorch", "test_unknown_backend_rejected"],
            test_references=["main", "run_cdi_example_with_backend", "backend_selector", "monkeypatch"],
            asserts_added=12,
            flags_added=["backend"],
            flags_consumed=["backend"],
            languages=["python"], ast=True,
        ),
    ),
    Turn(
        307, TORCH, ["tests/scripts/test_inference_backend_selector.py"], TORCH_HUB,
        f"SUPERVISOR AUTO (prompt=supervisor.md) (iter=00307): [{TORCH}] inference --backend flag — tests: not run",
        f"RALPH AUTO (prompt=main.md) (iter=00307): [{TORCH}] inference --backend argument — tests: pytest tests/scripts/test_inference_backend_selector.py -q (3 passed)",
        files={
            "scripts/inference/inference.py": (13, 0),
            "tests/scripts/test_inference_backend_selector.py": (84, 0),
            "scripts/compare_models.py": (56, 0),
            f"{TORCH_HUB}/green/pytest_inference_flag.log": (12, 0),
        },
        evidence=DiffEvidence(
            symbols_changed=[
                "scripts/inference/inference.py::parse_arguments",
                "scripts/compare_models.py::load_models",
                "scripts/compare_models.py::compare",
                "scripts/compare_models.py::plot_comparison",
            ],
            test_functions=["test_backend_flag_default", "test_backend_flag_choices", "test_backend_flag_rejects_unknown"],
            test_references=["parse_arguments", "SystemExit"],
            asserts_added=4,
            flags_added=["backend"],
            flags_consumed=[],
            languages=["python"], ast=True,
        ),
    ),
    Turn(
        308, TORCH, ["tests/scripts/test_inference_backend_selector.py"], TORCH_HUB,
        f"SUPERVISOR AUTO (prompt=supervisor.md) (iter=00308): [{TORCH}] PyTorch inference execution path — tests: not run",
        f"RALPH AUTO (prompt=main.md) (iter=00308): [{TORCH}] PyTorch inference branch; CLI smoke fails — tests: pytest tests/scripts/test_inference_backend_selector.py -q (4 passed, 1 failed: TypeError: unexpected keyword argument batch_size)",
        files={
            "scripts/inference/inference.py": (40, 0),
            "scripts/compare_models.py": (92, 0),
            "tests/scripts/test_inference_backend_selector.py": (78, 0),
            f"{TORCH_HUB}/red/cli_smoke.log": (25, 0),
        },
        evidence=DiffEvidence(
            symbols_changed=[
                "scripts/inference/inference.py::run_pytorch_inference",
                "scripts/inference/inference.py::main",
                "scripts/compare_models.py::load_pytorch_model",
                "scripts/compare_models.py::compare",
                "scripts/compare_models.py::main",
            ],
            test_functions=["test_pytorch_inference_branch", "test_pytorch_inference_outputs"],
            test_references=["run_pytorch_inference", "tmp_path"],
            asserts_added=5,
            languages=["python"], ast=True,
        ),
    ),
    Turn(
        309, TORCH, ["tests/scripts/test_inference_backend_selector.py::test_pytorch_execution_config_flags"], TORCH_HUB,
        f"SUPERVISOR AUTO (prompt=supervisor.md) (iter=00309): [{TORCH}] inference execution-config flags — tests: not run",
        f"RALPH AUTO (prompt=main.md) (iter=00309): [{TORCH}] inference execution-config flags parsed and consumed; smoke passes — tests: pytest tests/scripts/test_inference_backend_selector.py::test_pytorch_execution_config_flags -q (7 passed)",
        files={
            "scripts/inference/inference.py": (31, 17),
            "tests/scripts/test_inference_backend_selector.py": (124, 0),
            "scripts/compare_models.py": (19, 0),
            f"{TORCH_HUB}/green/inference_smoke.log": (40, 0),
        },
        evidence=DiffEvidence(
            symbols_changed=[
                "scripts/inference/inference.py::parse_arguments",
                "scripts/inference/inference.py::build_execution_config",
                "scripts/inference/inference.py::run_pytorch_inference",
                "scripts/compare_models.py::main",
            ],
            test_functions=["test_pytorch_execution_config_flags"],
            test_references=["parse_arguments", "build_execution_config", "run_pytorch_inference"],
            asserts_added=8,
            flags_added=["accelerator", "num_workers", "inference_batch_size"],
            flags_consumed=["accelerator", "num_workers", "inference_batch_size"],
            languages=["python"], ast=True,
        ),
    ),
    Turn(
        310, TORCH, ["tests/scripts/test_training_backend_selector.py"], TORCH_HUB,
        f"SUPERVISOR AUTO (prompt=supervisor.md) (iter=00310): [{TORCH}] training execution-config flags — tests: not run",
        "RALPH AUTO (prompt=main.md) (iter=00310): reports evidence — tests: not run",
        files={f"{TORCH_HUB}/rebase_failure.md": (8, 0)},
        hub_summary=False,
        git_failure="rebase-merge",
    ),
    Turn(
        311, TORCH, ["tests/scripts/test_training_backend_selector.py::test_pytorch_execution_config_flags"], TORCH_HUB,
        f"SUPERVISOR AUTO (prompt=supervisor.md) (iter=00311): [{TORCH}] training execution-config flags (retry) — tests: not run",
        f"RALPH AUTO (prompt=main.md) (iter=00311): [{TORCH}] training execution-config flags, CLI parity — tests: pytest tests/scripts/test_training_backend_selector.py::test_pytorch_execution_config_flags -q (2 passed)",
        files={
            "scripts/training/train.py": (217, 0),
            "tests/scripts/test_training_backend_selector.py": (127, 0),
            "ptycho/workflows/backend_selector.py": (8, 0),
            "ptycho/workflows/components.py": (8, 8),
            f"{TORCH_HUB}/green/pytest_training_flags.log": (30, 0),
        },
        evidence=DiffEvidence(
            symbols_changed=[
                "scripts/training/train.py::parse_arguments",
                "scripts/training/train.py::build_execution_config",
                "ptycho/workflows/backend_selector.py::run_cdi_example_with_backend",
                "ptycho/workflows/components.py::train_cdi_model_torch",
            ],
            test_functions=["test_pytorch_execution_config_flags"],
            test_references=["parse_arguments", "build_execution_config", "run_cdi_example_with_backend", "train_cdi_model_torch"],
            asserts_added=9,
            flags_added=["accelerator", "num_workers", "accumulate_grad_batches", "learning_rate", "scheduler", "logger", "checkpoint"],
            flags_consumed=["accelerator", "num_workers", "accumulate_grad_batches", "learning_rate", "scheduler", "logger", "checkpoint"],
            languages=["python"], ast=True,
        ),
    ),
]


def play_turn(s: Stream, t: Turn) -> None:
    """The events one audited iteration leaves: brief, memory, supervisor commit, work, engineer commit."""
    s.brief(f"{t.focus} — iteration {t.number}", mapped=t.mapped, artifacts=t.hub, none=not t.mapped, text=str(t.number))
    s.memory(focus=t.focus)
    s.commit(t.supervisor, files=t.supervisor_files or _bookkeeping(t.hub))
    if t.git_failure:
        s.git_state(t.git_failure, active=True)
    if t.hub_summary:
        s.hub_summary(t.hub)
    if t.engineer:
        s.commit(t.engineer, files=t.files, evidence=t.evidence)
    if t.git_failure:
        s.git_state(t.git_failure, active=False)


def seed_stream(repo: str = "seed") -> Stream:
    """All ten audited iterations, then the supervisor commit of 312 that makes 311 final."""
    s = Stream(repo)
    for t in TURNS:
        play_turn(s, t)
    s.commit(f"SUPERVISOR AUTO (prompt=supervisor.md) (iter=00312): [{TORCH}] next steps — tests: not run", files=_bookkeeping(TORCH_HUB))
    return s
