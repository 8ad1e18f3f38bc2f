"""Repeat-factor sampling: more of the frames that show a rarely seen instrument.

Box AP is a mean over instrument classes, and in laparoscopic cholecystectomy most frames show a grasper and a hook
while the bipolar, the irrigator, the scissors and the clipper appear in a few percent of them (on the demo cases:
2–7% of training frames against 62% for the hook). A model then places the common tools' boxes and guesses the
rare ones'. LVIS's repeat-factor sampling (Gupta, Dollár and Girshick, "LVIS: A Dataset for Large Vocabulary
Instance Segmentation", CVPR 2019) repeats each training image by

    r(image) = max over the classes c in it of max(1, sqrt(t / f(c)))

where f(c) is the fraction of training images showing class c and t the threshold below which a class counts as
rare. A frame is kept in place ``floor(r)`` times and once more with probability ``r - floor(r)`` (seeded, so a run
is repeatable), as detectron2's ``RepeatFactorTrainingSampler`` rounds a repeat factor.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Sequence

from train.data.sample import Sample

__all__ = ["class_frequencies", "repeat_factor_sampled", "repeat_factors"]


def _classes(sample: Sample) -> set[str]:
    return {ins.tool for ins in sample.truth.instruments}


def class_frequencies(samples: Sequence[Sample]) -> dict[str, float]:
    """The fraction of ``samples`` that show each instrument class."""
    counts = Counter(c for s in samples for c in _classes(s))
    return {c: n / len(samples) for c, n in counts.items()} if samples else {}


def repeat_factors(samples: Sequence[Sample], threshold: float) -> list[float]:
    """Each sample's repeat factor (1 for a frame with no instrument or only common ones)."""
    if not 0 < threshold <= 1:
        raise ValueError(f"the repeat-factor threshold is a fraction of frames in (0, 1]; got {threshold!r}")
    freq = class_frequencies(samples)
    per_class = {c: max(1.0, math.sqrt(threshold / f)) for c, f in freq.items()}
    return [max((per_class[c] for c in _classes(s)), default=1.0) for s in samples]


def repeat_factor_sampled(samples: list[Sample], threshold: float | None, seed: int) -> list[Sample]:
    """``samples`` with each repeated by its factor, in place (the order stays case by case); None: as they are."""
    if threshold is None:
        return samples
    rng = random.Random(seed)
    out: list[Sample] = []
    for sample, factor in zip(samples, repeat_factors(samples, threshold), strict=True):
        whole = math.floor(factor)
        out += [sample] * (whole + (rng.random() < factor - whole))
    return out
