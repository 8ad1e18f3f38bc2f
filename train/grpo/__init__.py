"""GRPO: rule-based rewards and the GRPO stage (trl GRPOTrainer)."""
