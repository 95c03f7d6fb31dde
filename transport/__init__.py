"""gRPC transport between the daemon and the Manager (the seeds' DaemonService and
ManagerService contracts). It wires `supervisor`, `collectors` and `updater` to the
Manager; nothing imports it. Its services arrive with the transport issue."""
