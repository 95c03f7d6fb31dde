"""The public API of `supervisor` is exactly what its __init__ exports."""

from __future__ import annotations

import supervisor

EXPECTED = {
    "Supervisor",
    "UpdateControl",
    "SupervisorStatistics",
    "open_supervisor",
    "AgentInfo",
    "Outcome",
    "AgentEvent",
    "EventSubscription",
    "AgentState",
    "Config",
    "DaemonSpec",
    "AgentSpec",
    "AgentType",
    "RestartSpec",
    "RestartPolicy",
    "HealthCheckSpec",
    "LogSpec",
    "default_args",
    "load_config",
    "parse_config",
    "check_paths",
    "dump_config",
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
    "DaemonLockedError",
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
