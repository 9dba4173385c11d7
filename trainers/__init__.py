"""Memory-R1 training (PPO / GRPO with TRL). Empty until the trainers land."""
