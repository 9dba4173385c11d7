"""memory-harness: evaluate how well LLM agents remember (LoCoMo, LongMemEval, MSC)."""

__version__ = "0.1.0"
