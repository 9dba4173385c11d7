"""Memory-R1's Memory Manager: the Mem0 update contract (new facts + related memories -> ADD / UPDATE / DELETE
/ NOOP as JSON), run by its own model, role `manager` (`--manager-model`: a served model, or a local
checkpoint fine-tuned by `trainers/`).

The prompt, generation settings and parser are `systems.memory_ops`'s, unchanged, so a trained manager is
evaluated on exactly the contract it was trained on.
"""

from __future__ import annotations

from harness.system import SystemContext
from systems.memory_ops import (
    MANAGER_CONFIG,
    ManagerCall,
    ManagerDecision,
    MemoryManager,
    build_manager_messages,
    parse_manager_reply,
)

MANAGER_ROLE = "manager"

__all__ = [
    "MANAGER_CONFIG",
    "MANAGER_ROLE",
    "ManagerCall",
    "ManagerDecision",
    "MemoryManager",
    "build_manager_messages",
    "memory_manager",
    "parse_manager_reply",
]


def memory_manager(context: SystemContext) -> MemoryManager:
    """The Memory Manager of a run: role `manager`, falling back to `model` when the run names none."""
    return MemoryManager(context.role(MANAGER_ROLE))
