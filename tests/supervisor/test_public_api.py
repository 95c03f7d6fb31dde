"""The public API of `supervisor` is exactly what its __init__ exports."""

from __future__ import annotations

import supervisor

EXPECTED = {
    "Supervisor",
    "SupervisorStatistics",
    "open_supervisor",
    "AgentInfo",
    "Outcome",
    "AgentEvent",
    "EventSubscription",
    "AgentState",
    "AgentSpec",
    "AgentType",
    "RestartSpec",
    "RestartPolicy",
    "HealthCheckSpec",
    "LogSpec",
    "default_args",
    "DEFAULT_WORK_DIR",
    "parse_agents",
    "check_agent_paths",
    "dump_agent",
    "AgentStore",
    "SpawnJournal",
    "AgentRecord",
    "ProcessIdentity",
    "set_child_subreaper",
    "children_of",
    "spec_digest",
    "atomic_write",
    "parse_duration",
    "parse_size",
    "format_duration",
    "AgentMachine",
    "ExitStatus",
    "Spawn",
    "Kill",
    "StateChange",
    "Event",
    "transition",
    "backoff_delay",
    "nominal_delay",
    "Registry",
    "ReloadPlan",
    "plan_reload",
    "apply_plan",
    "SupervisorError",
    "ConfigError",
    "ConfigIssue",
    "ConfigLoadError",
    "UnknownAgentError",
    "DuplicateAgentError",
    "AgentActiveError",
    "InvalidTransitionError",
    "SpawnError",
    "StopError",
    "SupervisorClosedError",
    "StateFileError",
    "SocketSetupError",
    "HealthSnapshot",
    "Check",
    "CheckState",
    "Verdict",
    "ResourceAlert",
    "ResourceSample",
    "HealthStatistics",
    "AgentHealth",
    "ThresholdTracker",
    "HeartbeatTracker",
    "FailureCounter",
    "ResourceHistory",
}


def test_exports_are_pinned() -> None:
    """__all__ lists exactly the documented names, and each one exists."""
    assert set(supervisor.__all__) == EXPECTED
    assert len(supervisor.__all__) == len(EXPECTED)
    for name in supervisor.__all__:
        assert getattr(supervisor, name) is not None
        assert getattr(supervisor, name).__doc__, name


def test_one_error_root() -> None:
    """Every exported error derives from SupervisorError."""
    errors = [getattr(supervisor, n) for n in supervisor.__all__ if n.endswith("Error")]
    assert all(issubclass(e, supervisor.SupervisorError) for e in errors)
    assert issubclass(supervisor.ConfigError, ValueError)
    assert issubclass(supervisor.UnknownAgentError, LookupError)


def test_core_import_stays_light() -> None:
    """Importing the core loads no gRPC, crypto, YAML or sibling package (RSS matters)."""
    import subprocess
    import sys

    heavy = {"transport", "updater", "grpc", "cryptography", "yaml", "google"}
    code = "import sys, supervisor; print(' '.join(sorted(sys.modules)))"
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert not {m.split(".")[0] for m in loaded} & heavy


def test_the_schema_module_exports_are_pinned() -> None:
    """supervisor.schema is the one public submodule for programs' own config sections."""
    import supervisor.schema

    assert set(supervisor.schema.__all__) == {
        "Kind", "Field", "Block", "Invalid", "Issues", "read_block", "write_block",
        "merge_layers", "join", "unknown_key", "BOOLEAN", "STRING", "PATH", "DURATION",
        "LOG_LEVEL", "read_agents", "creatable_dir", "script_interpreter", "show",
    }  # fmt: skip
