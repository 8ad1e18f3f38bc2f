"""CoT builder (DESIGN.md §5, stage 2): three-level chains from the labels, the SFT and GRPO sets,
and optional distillation from a teacher backend."""

from train.cot.chains import (
    CotError,
    build_chain,
    cvs_states,
    localisation_target,
    perceived_instruments,
    phase_option,
    task_answer,
)
from train.cot.datasets import (
    grpo_row,
    label_columns,
    sft_row,
    structured_messages,
    user_prompt,
    write_grpo_set,
    write_sft_set,
)
from train.cot.distill import Distilled, answer_matches, distill, write_distilled_set

__all__ = [
    "CotError",
    "Distilled",
    "answer_matches",
    "build_chain",
    "cvs_states",
    "distill",
    "grpo_row",
    "label_columns",
    "localisation_target",
    "perceived_instruments",
    "phase_option",
    "sft_row",
    "structured_messages",
    "task_answer",
    "user_prompt",
    "write_distilled_set",
    "write_grpo_set",
    "write_sft_set",
]
