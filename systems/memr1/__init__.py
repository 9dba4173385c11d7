"""Memory-R1 (Yan et al., 2025, arXiv 2508.19828): a Memory Manager and an Answer Agent over a Mem0-style bank.

The public API below is what `trainers/` builds its RL environments on: the same prompt builders and parsers
the `memr1` system runs, so rollouts and evaluation cannot drift apart.
"""

from systems.memr1.answer_agent import (
    ANSWER_AGENT_CONFIG,
    ANSWER_MARKER,
    AnswerAgentReply,
    build_answer_agent_messages,
    parse_answer_agent_reply,
)
from systems.memr1.manager import (
    MANAGER_CONFIG,
    MANAGER_ROLE,
    ManagerDecision,
    MemoryManager,
    build_manager_messages,
    parse_manager_reply,
)

__all__ = [
    "ANSWER_AGENT_CONFIG",
    "ANSWER_MARKER",
    "MANAGER_CONFIG",
    "MANAGER_ROLE",
    "AnswerAgentReply",
    "ManagerDecision",
    "MemoryManager",
    "build_answer_agent_messages",
    "build_manager_messages",
    "parse_answer_agent_reply",
    "parse_manager_reply",
]
