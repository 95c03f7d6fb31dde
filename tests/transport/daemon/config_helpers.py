"""Shared pieces of the configuration tests: the seed's document and issue helpers."""

from __future__ import annotations

from typing import Any

import pytest

from supervisor import ConfigError
from transport.daemon._config import parse_config

# The seed's daemon.yaml (004 section 5.1), comments dropped.
SEED_YAML = """\
daemon:
  id: ""
  log_level: info
  log_file: /var/log/daemon/daemon.log
  pid_file: /var/run/daemon.pid
  work_dir: /var/lib/daemon
manager:
  address: "manager.example.com:9090"
  tls:
    cert_file: /etc/daemon/certs/client.crt
    # Not in the seed, which names a client certificate without its key: unusable.
    key_file: /etc/daemon/certs/client.key
  heartbeat_interval: 60s
agents:
  - id: filebeat-logs
    type: filebeat
    name: "Filebeat Log Collector"
    binary_path: /usr/bin/filebeat
    config_file: /etc/filebeat/filebeat.yml
    work_dir: /var/lib/daemon/agents/filebeat-logs
    socket_path: ""
    enabled: true
    args: ["-c", "/etc/filebeat/filebeat.yml", "-path.home", "/var/lib/daemon/agents/filebeat-logs"]
    health_check:
      interval: 30s
      heartbeat_timeout: 90s
      cpu_threshold: 50.0
      memory_threshold: 524288000
      threshold_duration: 60s
    restart:
      max_retries: 10
      backoff_base: 10s
      backoff_max: 60s
      policy: always
  - id: node-exporter
    type: node_exporter
    name: "Node Exporter Metrics"
    binary_path: /usr/local/bin/node_exporter
    config_file: ""
    work_dir: /var/lib/daemon/agents/node-exporter
    socket_path: ""
    enabled: true
    health_check:
      interval: 30s
      heartbeat_timeout: 0s
      cpu_threshold: 30.0
      memory_threshold: 104857600
      threshold_duration: 60s
      http_endpoint: "http://localhost:9100/metrics"
    restart:
      policy: always
agent_defaults:
  health_check:
    interval: 30s
  restart:
    max_retries: 10
    policy: always
collectors:
  cpu:
    enabled: true
    interval: 60s
update:
  download_dir: /var/lib/daemon/downloads
  max_backups: 5
"""


def agent(**fields: Any) -> dict[str, Any]:
    """An agent entry with the required fields, plus ``fields``."""
    return {"id": "web", "binary_path": "/usr/bin/web", **fields}


def issues_of(document: Any, **kwargs: Any) -> list[str]:
    """The issues parse_config reports for ``document``, as strings."""
    with pytest.raises(ConfigError) as info:
        parse_config(document, **kwargs)
    return [str(issue) for issue in info.value.issues]


def only_issue(document: Any, **kwargs: Any) -> str:
    """The single issue parse_config reports for ``document``."""
    issues = issues_of(document, **kwargs)
    assert len(issues) == 1, issues
    return issues[0]
