"""A run fitted to minutes (a GPU lease, a bounded CPU budget) ends with its learning rate decayed."""

from __future__ import annotations

import pytest
import torch
from transformers import TrainerControl, TrainerState, TrainingArguments, get_scheduler

from train.stage_inputs import PACE_MARGIN, PACE_SKIP_STEPS, PACE_STEPS, time_fit


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _drive(
    minutes: float, max_steps: int, seconds_a_step: float, first_step_s: float, tmp_path, warmup: int = 3,
    slower_from: int | None = None,
):  # fmt: skip
    """The trainer's calls as its loop makes them: a scheduler step, then the callback's step end. From step
    ``slower_from`` on, each step takes three times as long (a machine that got busy)."""
    args = TrainingArguments(
        output_dir=str(tmp_path), max_steps=max_steps, learning_rate=1e-3, lr_scheduler_type="cosine",
        warmup_steps=warmup, use_cpu=True, report_to=[],
    )  # fmt: skip
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=args.learning_rate)
    scheduler = get_scheduler("cosine", optimizer=optimizer, num_warmup_steps=warmup, num_training_steps=max_steps)
    state, control, clock = TrainerState(max_steps=max_steps), TrainerControl(), Clock()
    fit = time_fit(minutes, clock)
    fit.on_train_begin(args, state, control)
    rates = []
    while not control.should_training_stop and state.global_step < state.max_steps:
        slow = slower_from is not None and state.global_step >= slower_from
        clock.now += first_step_s if state.global_step == 0 else seconds_a_step * (3 if slow else 1)
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
        state.global_step += 1
        fit.on_step_end(args, state, control, lr_scheduler=scheduler)
    return fit, state, rates, clock


def test_a_run_too_long_for_its_minutes_is_laid_out_again_and_ends_decayed(tmp_path):
    # 2,000 planned steps of 1 s do not fit 5 minutes; the slow first step is left out of the pace
    fit, state, rates, clock = _drive(5.0, 2000, 1.0, 30.0, tmp_path)
    assert fit.stopped and fit.planned_steps == 2000
    expected = PACE_SKIP_STEPS + PACE_STEPS + int(300 * PACE_MARGIN - (30 + PACE_SKIP_STEPS + PACE_STEPS - 1))
    assert fit.fitted_steps == state.global_step == expected
    assert clock.now <= 300  # inside the minutes
    assert rates[-1] < 0.01 * max(rates)  # the last step's rate is the schedule's tail, not mid-schedule
    assert max(rates) == pytest.approx(1e-3)


def test_a_run_that_fits_keeps_its_plan_and_one_slower_than_its_pace_still_stops_at_the_minutes(tmp_path):
    fit, state, _, _ = _drive(5.0, 100, 1.0, 1.0, tmp_path)
    assert not fit.stopped and fit.fitted_steps is None and state.global_step == 100
    # fitted at 1 s a step, then 3 s a step from step 100: stopped at the minutes, before the fitted plan
    fit, state, _, clock = _drive(5.0, 2000, 1.0, 1.0, tmp_path, slower_from=100)
    assert fit.stopped and state.global_step < fit.fitted_steps and 300 <= clock.now < 303
    # too short to measure a pace: the plain cap stops it at the first step past the minutes
    fit, state, _, clock = _drive(0.1, 100, 1.0, 1.0, tmp_path)
    assert fit.stopped and fit.fitted_steps is None and state.global_step == 6 and clock.now == 6.0


def test_a_warm_up_longer_than_the_fitted_run_ends_so_the_rate_still_decays(tmp_path):
    # 100 warm-up steps against a run that fits 40: the warm-up ends where the pace was measured
    fit, state, rates, _ = _drive(1.0, 2000, 1.0, 1.0, tmp_path, warmup=100)
    assert fit.fitted_steps == state.global_step < 100
    peak = rates.index(max(rates))
    assert peak <= PACE_SKIP_STEPS + PACE_STEPS + 1 and rates[-1] < 0.05 * rates[peak]
