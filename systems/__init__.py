"""Memory systems: one module (or package) per system, registered in `harness.plugins`."""
