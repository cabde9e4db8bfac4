"""Training building blocks the configs point at: schedules and network adapters."""
