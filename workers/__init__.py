"""arq WorkerSettings for distributed mode: `arq workers.coordinator.WorkerSettings`."""
