"""LLM backends, one module each; imported lazily through `harness.plugins.BACKENDS`."""
