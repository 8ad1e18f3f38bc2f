"""Per-task evaluation metrics on plain inputs (lists and arrays of labels, scores and boxes).

Every function is pure and returns a small dataclass (``to_dict()`` gives JSON-ready values,
NaN written as None). Definitions, as the papers we compare with compute them:

* phase: frame accuracy; per-class precision, recall and Jaccard; macro averages over the
  classes present in the gold labels (a class never predicted has precision 0). The relaxed
  variant (Cholec80 / TeCNO evaluation script, ±10 s) is described at :func:`relaxed_correct`.
* triplets: AP per class of the i, v, t, iv, it and ivt components (CholecT50's triplet map),
  classes without a positive gold frame left out (NaN), mAP their mean — ivtmetrics'
  ``Recognition`` when installed, else the same computation here; set-F1 for generated sets.
* CVS: per-criterion AP (gold rater mean binarised at >= 0.5) and mAP; balanced accuracy of the
  prediction binarised at >= 0.5 per criterion and their mean.
* boxes: mIoU (each gold box matched to the best-overlapping predicted box of its class in the
  same image, 0 when none) and COCO AP at IoU 0.5 (pycocotools' ``COCOeval`` when installed,
  else the same 101-point interpolated computation here).
* MCQ: accuracy exactly as the Surg-R1 release scorer (:func:`engine.scoring.release_correct`).
* actions (SAR-RARP50): frame accuracy and macro precision/recall/Jaccard as for phases, plus the
  segmental edit score and F1@{10,25,50} of action-segmentation work, per video then averaged.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score, balanced_accuracy_score

from engine.ontology import load_ontology
from engine.scoring import release_correct

__all__ = [
    "COMPONENTS",
    "PHASES",
    "SEGMENT_OVERLAPS",
    "ActionMetrics",
    "BoxMetrics",
    "CvsMetrics",
    "McqMetrics",
    "PhaseMetrics",
    "TripletMetrics",
    "action_metrics",
    "box_iou",
    "box_metrics",
    "coco_ap50",
    "cvs_metrics",
    "edit_score",
    "have_ivtmetrics",
    "have_pycocotools",
    "jsonable",
    "mcq_accuracy",
    "phase_metrics",
    "relaxed_correct",
    "segment_f1",
    "segments_of",
    "triplet_map",
    "triplet_set_f1",
    "triplet_sets_to_arrays",
]

PHASES: tuple[str, ...] = tuple(label.name for label in sorted(load_ontology().phase, key=lambda lb: lb.id))
"""The 7 Cholec80 phases in clinical order (their ids are the positions)."""

COMPONENTS = ("i", "v", "t", "iv", "it", "ivt")
N_TRIPLETS = 100
RELAXED_SECONDS = 10.0
_NOT_A_PHASE = -1000  # id of a prediction outside ``labels``: never a neighbour of any phase


def jsonable(value: Any) -> Any:
    """JSON-ready: NaN → None, numpy scalars → Python, recursively."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _nanmean(values) -> float:
    arr = np.asarray(list(values), dtype=float)
    if arr.size == 0 or np.all(np.isnan(arr)):
        return float("nan")
    return float(np.nanmean(arr))


class _Result:
    def to_dict(self) -> dict:
        return jsonable(asdict(self))


# ----------------------------------------------------------------------------------------- phase


@dataclass
class PhaseMetrics(_Result):
    n: int
    accuracy: float
    precision: float  # macro over classes present in the gold labels
    recall: float
    jaccard: float
    per_class: dict[str, dict[str, float]] = field(default_factory=dict)  # precision, recall, jaccard, support
    relaxed: dict[str, Any] | None = None  # same keys, relaxed boundary, averaged over videos


def _class_scores(gold: np.ndarray, pred: np.ndarray, ok: np.ndarray, k: int) -> dict[str, float]:
    """Precision, recall and Jaccard of class ``k`` where ``ok`` marks the frames counted correct."""
    in_gold, in_pred = gold == k, pred == k
    union = in_gold | in_pred
    support = int(in_gold.sum())
    if support == 0:
        nan = float("nan")
        return {"precision": nan, "recall": nan, "jaccard": nan, "support": 0}
    n_pred = int(in_pred.sum())
    return {
        "precision": float((in_pred & ok).sum() / n_pred) if n_pred else 0.0,
        "recall": float((in_gold & ok).sum() / support),
        "jaccard": float((union & ok).sum() / union.sum()),
        "support": support,
    }


def relaxed_correct(gold: Sequence[int], pred: Sequence[int], window: int) -> np.ndarray:
    """Which frames of one video count as correct under the relaxed boundary (Cholec80/TeCNO).

    ``gold`` and ``pred`` are per-frame phase ids in Cholec80 order (0 Preparation .. 6
    GallbladderRetraction), one video, consecutive frames; ``window`` is 10 s in frames. A frame is
    correct when ``pred == gold``, or when, in a maximal gold run (segment) of phase ``p`` with
    ``t = min(window, len(segment))``:

    * it is among the first ``t`` frames of the segment and ``pred == p - 1`` (late transition),
      also ``p - 2`` when ``p`` is CleaningCoagulation (5) or GallbladderRetraction (6);
    * it is among the last ``t`` frames of the segment and ``pred == p + 1`` (early transition),
      also ``p + 2`` when ``p`` is GallbladderDissection (3), GallbladderPackaging (4),
      CleaningCoagulation (5) or GallbladderRetraction (6).

    These are the rules of the Cholec80 MATLAB script (``Evaluate.m``, used by SV-RCNet, TeCNO,
    Trans-SVNet). Unlike that script, the end window really is the segment's last ``t`` frames (the
    script's logical index of length ``t`` applies the end rule to the first frames, a known bug,
    Funke et al. 2023 "Metrics matter in surgical phase recognition").
    """
    gold = np.asarray(gold, dtype=int)
    pred = np.asarray(pred, dtype=int)
    ok = gold == pred
    diff = pred - gold
    n = len(gold)
    start = 0
    while start < n:
        end = start
        while end + 1 < n and gold[end + 1] == gold[start]:
            end += 1
        p = int(gold[start])
        length = end - start + 1
        t = min(window, length)
        late = {-1, -2} if p in (5, 6) else {-1}
        early = {1, 2} if p in (3, 4, 5, 6) else {1}
        head = slice(start, start + t)
        tail = slice(end + 1 - t, end + 1)
        ok[head] |= np.isin(diff[head], list(late))
        ok[tail] |= np.isin(diff[tail], list(early))
        start = end + 1
    return ok


def _ids(values: Sequence[str | None], labels: Sequence[str]) -> np.ndarray:
    index = {name: i for i, name in enumerate(labels)}
    return np.array([index.get(v, _NOT_A_PHASE) if v is not None else _NOT_A_PHASE for v in values], dtype=int)


def _checked_ids(
    gold: Sequence[str | None], pred: Sequence[str | None], labels: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Both sequences as label ids, refusing sequences of different lengths and gold outside ``labels``."""
    if len(gold) != len(pred):
        raise ValueError(f"gold has {len(gold)} frames, pred {len(pred)}")
    g, p = _ids(gold, labels), _ids(pred, labels)
    if np.any(g == _NOT_A_PHASE):
        bad = sorted({str(x) for x, k in zip(gold, g, strict=True) if k == _NOT_A_PHASE})
        raise ValueError(f"gold labels outside labels: {', '.join(bad)}")
    return g, p


def _summary(gold: np.ndarray, pred: np.ndarray, ok: np.ndarray, labels: Sequence[str]) -> dict[str, Any]:
    per_class = {name: _class_scores(gold, pred, ok, k) for k, name in enumerate(labels)}
    return {
        "accuracy": float(ok.mean()) if len(ok) else float("nan"),
        "precision": _nanmean(c["precision"] for c in per_class.values()),
        "recall": _nanmean(c["recall"] for c in per_class.values()),
        "jaccard": _nanmean(c["jaccard"] for c in per_class.values()),
        "per_class": per_class,
    }


def phase_metrics(
    gold: Sequence[str],
    pred: Sequence[str | None],
    labels: Sequence[str] = PHASES,
    video_ids: Sequence[str] | None = None,
    relaxed: bool = False,
    fps: float = 1.0,
) -> PhaseMetrics:
    """Frame-level phase metrics, pooled over all frames; with ``relaxed`` also the relaxed variant.

    A prediction outside ``labels`` (None, unknown) is a wrong prediction of no class. Per class:
    precision = correct predictions of it / predictions of it (0 when never predicted), recall =
    correct gold frames of it / gold frames of it, Jaccard = |gold ∩ pred| / |gold ∪ pred|; classes
    absent from the gold labels are NaN and left out of the macro averages.

    The relaxed variant (Cholec80 protocol) is computed per video (``video_ids``; one video when
    None) on frames given in temporal order, consecutive at ``fps`` frames per second, with the
    correct frames of :func:`relaxed_correct` (window ``round(10 * fps)`` frames) in place of
    ``pred == gold`` in all three per-class formulas (Jaccard's numerator counts the correct frames
    of the union, as in the script). Per-class values are NaN in a video whose gold labels lack
    the class; the reported values are means over videos (per class: mean over videos that have
    it; accuracy: mean of per-video accuracies), macro = mean over classes.
    """
    g, p = _checked_ids(gold, pred, labels)
    strict = _summary(g, p, g == p, labels)
    result = PhaseMetrics(n=len(g), **strict)
    if relaxed:
        videos = list(video_ids) if video_ids is not None else ["video"] * len(g)
        if len(videos) != len(g):
            raise ValueError("video_ids must have one entry per frame")
        window = max(1, round(RELAXED_SECONDS * fps))
        per_video = []
        for vid in dict.fromkeys(videos):
            idx = np.array([i for i, v in enumerate(videos) if v == vid])
            gv, pv = g[idx], p[idx]
            per_video.append(_summary(gv, pv, relaxed_correct(gv, pv, window), labels))
        per_class = {
            name: {
                key: _nanmean(v["per_class"][name][key] for v in per_video)
                for key in ("precision", "recall", "jaccard")
            }
            | {"support": sum(v["per_class"][name]["support"] for v in per_video)}
            for name in labels
        }
        result.relaxed = {
            "videos": len(per_video),
            "window_frames": window,
            "accuracy": _nanmean(v["accuracy"] for v in per_video),
            "precision": _nanmean(c["precision"] for c in per_class.values()),
            "recall": _nanmean(c["recall"] for c in per_class.values()),
            "jaccard": _nanmean(c["jaccard"] for c in per_class.values()),
            "per_class": per_class,
        }
    return result


# -------------------------------------------------------------------------------------- triplets


@dataclass
class TripletMetrics(_Result):
    n: int
    mAP: dict[str, float]  # component → mean AP over classes with a positive gold frame
    AP: dict[str, list[float]] = field(default_factory=dict)  # component → per-class AP (NaN: no positive)
    set_f1: dict[str, float] | None = None  # precision, recall, f1 over (frame, triplet) pairs
    backend: str = "surgview"  # "ivtmetrics" when computed by ivtmetrics.Recognition


def have_ivtmetrics() -> bool:
    try:
        import ivtmetrics  # noqa: F401
    except ImportError:
        return False
    return True


def _component_map() -> dict[str, np.ndarray]:
    """Triplet id → class id of each component (CholecT50 map, the one ivtmetrics ships)."""
    rows = sorted(load_ontology().triplets, key=lambda t: t.id)
    ivt = np.array([t.id for t in rows])
    i = np.array([t.instrument for t in rows])
    v = np.array([t.verb for t in rows])
    t_ = np.array([t.target for t in rows])
    # iv and it: the pair ids of maps.txt (columns IV, IT) are i*10+v and i*15+t.
    return {"ivt": ivt, "i": i, "v": v, "t": t_, "iv": i * 10 + v, "it": i * 15 + t_}


def _extract(array: np.ndarray, component: str) -> np.ndarray:
    """A component's labels from triplet labels: per component class, the max over its triplets."""
    if component == "ivt":
        return array
    column = _component_map()[component]
    classes = np.unique(column)
    return np.stack([array[:, column == c].max(axis=1) for c in classes], axis=1)


def _ap_columns(gold: np.ndarray, scores: np.ndarray) -> np.ndarray:
    out = np.full(gold.shape[1], np.nan)
    for c in range(gold.shape[1]):
        if gold[:, c].any():
            out[c] = average_precision_score(gold[:, c], scores[:, c])
    return out


def triplet_map(
    gold_multi_hot, pred_scores, use_ivtmetrics: bool | None = None, ignore_null: bool = False
) -> TripletMetrics:
    """AP per class and mAP of i, v, t, iv, it, ivt over all frames (N, 100) (ivtmetrics' global AP).

    ``use_ivtmetrics`` None: ivtmetrics when installed. ``ignore_null`` drops the 6 null-verb
    triplets (94..99) from the ivt mean, as ivtmetrics does.
    """
    gold = np.asarray(gold_multi_hot, dtype=int).reshape(-1, N_TRIPLETS)
    scores = np.asarray(pred_scores, dtype=float).reshape(-1, N_TRIPLETS)
    if gold.shape != scores.shape:
        raise ValueError(f"gold {gold.shape} and scores {scores.shape} differ")
    use = have_ivtmetrics() if use_ivtmetrics is None else use_ivtmetrics
    ap: dict[str, list[float]] = {}
    means: dict[str, float] = {}
    if len(gold) == 0:
        return TripletMetrics(0, {c: float("nan") for c in COMPONENTS}, {c: [] for c in COMPONENTS})
    if use:
        import ivtmetrics

        rec = ivtmetrics.Recognition(num_class=N_TRIPLETS)
        rec.update(gold, scores)
        for comp in COMPONENTS:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                res = rec.compute_AP(comp, ignore_null=ignore_null)
            values = np.asarray(res["AP"], dtype=float)
            # ivtmetrics marks a class without positives NaN by reading "-0" in sklearn's answer;
            # scikit-learn >= 1.3 answers +0.0 there (so ivtmetrics would count it as AP 0): mask it.
            present = _extract(gold, comp).any(axis=0)
            if ignore_null and comp == "ivt":
                present = present[:-6]
            values[~present] = np.nan
            ap[comp] = [float(x) for x in values]
            means[comp] = _nanmean(values)
    else:
        for comp in COMPONENTS:
            values = _ap_columns(_extract(gold, comp), _extract(scores, comp))
            if ignore_null and comp == "ivt":
                values = values[:-6]
            ap[comp] = [float(x) for x in values]
            means[comp] = _nanmean(values)
    return TripletMetrics(len(gold), means, ap, backend="ivtmetrics" if use else "surgview")


def triplet_sets_to_arrays(
    gold_sets: Sequence[set[int] | Sequence[int]],
    pred_sets: Sequence[set[int] | Sequence[int]],
    pred_scores: Sequence[Mapping[int, float]] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Multi-hot (N, 100) gold and scores from sets of triplet ids: a predicted triplet's score is its entry in
    ``pred_scores`` (the model's probability for it) when there is one, else 1; 0 when not predicted.

    Ids outside 0..99 (unknown triplets) have no column and are dropped here (:func:`triplet_set_f1`
    counts them as false positives)."""
    if len(gold_sets) != len(pred_sets):
        raise ValueError("gold and pred must have one set per frame")
    gold = np.zeros((len(gold_sets), N_TRIPLETS), dtype=int)
    pred = np.zeros((len(pred_sets), N_TRIPLETS), dtype=float)
    if pred_scores is not None and len(pred_scores) != len(pred_sets):
        raise ValueError("pred_scores must have one mapping per frame")
    for row, (gs, ps) in enumerate(zip(gold_sets, pred_sets, strict=True)):
        given = pred_scores[row] if pred_scores is not None else {}
        for tid in gs:
            if 0 <= tid < N_TRIPLETS:
                gold[row, tid] = 1
        for tid in ps:
            if 0 <= tid < N_TRIPLETS:
                pred[row, tid] = float(given.get(tid, 1.0))
    return gold, pred


def triplet_set_f1(gold_sets, pred_sets) -> dict[str, float]:
    """Micro precision/recall/F1 over (frame, triplet id) pairs; empty-vs-empty frames add nothing."""
    tp = n_pred = n_gold = 0
    for gs, ps in zip(gold_sets, pred_sets, strict=True):
        gs, ps = set(gs), set(ps)
        tp += len(gs & ps)
        n_pred += len(ps)
        n_gold += len(gs)
    precision = tp / n_pred if n_pred else (1.0 if n_gold == 0 else 0.0)
    recall = tp / n_gold if n_gold else (1.0 if n_pred == 0 else 0.0)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "tp": tp, "pred": n_pred, "gold": n_gold}


# ------------------------------------------------------------------------------------------- CVS


@dataclass
class CvsMetrics(_Result):
    n: int
    AP: list[float]  # C1..C3; NaN when no gold positive
    mAP: float
    balanced_accuracy: list[float]  # C1..C3; NaN when the gold has a single class
    mean_balanced_accuracy: float
    accuracy: list[float] = field(default_factory=list)  # C1..C3: share of frames called right (met or not)
    false_met: list[int] = field(default_factory=list)  # C1..C3: frames called met that the gold says are not
    # C1..C3: frames called met in a (case, phase) whose gold never has that criterion met (None without phases)
    met_outside_gold_phases: list[int] | None = None


def cvs_metrics(
    gold_means, pred_scores, threshold: float = 0.5, *, phase_groups: Sequence[Any] | None = None
) -> CvsMetrics:
    """CVS C1..C3: gold rater means (N, 3) binarised at >= ``threshold``; predicted scores (N, 3).

    AP per criterion by scikit-learn's ``average_precision_score`` (NaN with no positive gold), mAP
    their mean; balanced accuracy = mean of sensitivity and specificity of the scores binarised at
    >= ``threshold`` (NaN when the gold of that criterion has one class only), and its mean; plain accuracy
    and the count of false "met" calls per criterion (the error a reviewer must never be shown as safe).

    ``phase_groups`` (one hashable per row, e.g. ``(case, gold phase)``) adds the coarser count: "met" calls in a
    group where the gold never has that criterion met, e.g. C1 called during Preparation. A call a few frames
    early at the end of dissection counts in ``false_met`` but not here; a call in the wrong phase counts in both."""
    gold = np.asarray(gold_means, dtype=float).reshape(-1, 3) >= threshold
    scores = np.asarray(pred_scores, dtype=float).reshape(-1, 3)
    if gold.shape != scores.shape:
        raise ValueError(f"gold {gold.shape} and scores {scores.shape} differ")
    ap, bacc = [], []
    for c in range(3):
        y, s = gold[:, c].astype(int), scores[:, c]
        ap.append(float(average_precision_score(y, s)) if y.any() else float("nan"))
        if len(set(y.tolist())) == 2:
            bacc.append(float(balanced_accuracy_score(y, (s >= threshold).astype(int))))
        else:
            bacc.append(float("nan"))
    called = scores >= threshold
    accuracy = [float((called[:, c] == gold[:, c]).mean()) if len(gold) else float("nan") for c in range(3)]
    false_met = [int((called[:, c] & ~gold[:, c]).sum()) for c in range(3)]
    outside = None
    if phase_groups is not None:
        groups = list(phase_groups)
        if len(groups) != len(gold):
            raise ValueError(f"{len(groups)} phase groups for {len(gold)} rows")
        ever_met = {}
        for g, row in zip(groups, gold, strict=True):
            ever_met[g] = ever_met.get(g, np.zeros(3, dtype=bool)) | row
        allowed = np.array([ever_met[g] for g in groups], dtype=bool).reshape(-1, 3)
        outside = [int((called[:, c] & ~allowed[:, c]).sum()) for c in range(3)]
    return CvsMetrics(len(gold), ap, _nanmean(ap), bacc, _nanmean(bacc), accuracy, false_met, outside)


# ----------------------------------------------------------------------------------------- boxes

Box = tuple[float, float, float, float]
GoldBox = tuple[str, Box]  # class, (x1, y1, x2, y2)
PredBox = tuple[str, Box] | tuple[str, Box, float]  # class, box, optional score (default 1)


@dataclass
class BoxMetrics(_Result):
    n_images: int
    n_gold: int
    n_pred: int
    mIoU: float
    mAP50: float  # COCO AP at IoU 0.5, mean over classes with a gold box
    AP50: dict[str, float] = field(default_factory=dict)
    backend: str = "surgview"  # "pycocotools" when computed by COCOeval


def have_pycocotools() -> bool:
    try:
        import pycocotools.cocoeval  # noqa: F401
    except ImportError:
        return False
    return True


def box_iou(a: Box, b: Box) -> float:
    """IoU of two ``(x1, y1, x2, y2)`` boxes (continuous coordinates, as COCO: no +1); 0 for a box
    with no area (x2 <= x1 or y2 <= y1)."""
    if a[2] <= a[0] or a[3] <= a[1] or b[2] <= b[0] or b[3] <= b[1]:
        return 0.0
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def _pred(p: PredBox) -> tuple[str, Box, float]:
    return (p[0], tuple(float(x) for x in p[1]), float(p[2]) if len(p) > 2 and p[2] is not None else 1.0)


def coco_ap50(gold: Sequence[Sequence[GoldBox]], pred: Sequence[Sequence[PredBox]]) -> dict[str, float]:
    """Per-class AP at IoU 0.5 exactly as COCOeval computes it (area "all", 100 detections per image
    and class): detections sorted by score (stable), greedily matched to the unmatched gold box of
    highest IoU >= 0.5 in their image, precision made monotone, sampled at 101 recall points.
    Classes with no gold box are left out; a class with gold boxes and no detection has AP 0."""
    classes = sorted({c for img in gold for c, _ in img})
    recall_points = np.linspace(0.0, 1.0, 101)
    out: dict[str, float] = {}
    for cls in classes:
        scores, tps, n_gold = [], [], 0
        for g_img, p_img in zip(gold, pred, strict=True):
            gts = [tuple(float(x) for x in b) for c, b in g_img if c == cls]
            dts = [d for d in map(_pred, p_img) if d[0] == cls]
            n_gold += len(gts)
            order = np.argsort([-d[2] for d in dts], kind="mergesort")[:100]
            taken = [False] * len(gts)
            for k in order:
                best, match = min(0.5, 1 - 1e-10), -1
                for j, gb in enumerate(gts):
                    if taken[j]:
                        continue
                    iou = box_iou(dts[k][1], gb)
                    if iou < best:
                        continue
                    best, match = iou, j
                if match >= 0:
                    taken[match] = True
                scores.append(dts[k][2])
                tps.append(match >= 0)
        order = np.argsort(-np.asarray(scores, dtype=float), kind="mergesort")
        tp = np.cumsum(np.asarray(tps, dtype=float)[order])
        fp = np.cumsum(1.0 - np.asarray(tps, dtype=float)[order])
        rc = tp / n_gold
        pr = tp / (tp + fp + np.spacing(1))
        pr = np.maximum.accumulate(pr[::-1])[::-1] if len(pr) else pr
        idx = np.searchsorted(rc, recall_points, side="left")
        q = np.array([pr[i] if i < len(pr) else 0.0 for i in idx])
        out[cls] = float(q.mean())
    return out


def _pycocotools_ap50(gold, pred) -> dict[str, float]:
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    classes = sorted({c for img in gold for c, _ in img})
    cat = {c: k + 1 for k, c in enumerate(classes)}
    images, annotations, detections = [], [], []
    for n, (g_img, p_img) in enumerate(zip(gold, pred, strict=True), start=1):
        images.append({"id": n, "width": 1, "height": 1})
        for c, b in g_img:
            w, h = max(0.0, b[2] - b[0]), max(0.0, b[3] - b[1])
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": n,
                    "category_id": cat[c],
                    "bbox": [b[0], b[1], w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
        for c, b, s in map(_pred, p_img):
            if c in cat:  # a class without gold boxes is left out, as COCOeval does
                detections.append(
                    {
                        "image_id": n,
                        "category_id": cat[c],
                        "bbox": [b[0], b[1], max(0.0, b[2] - b[0]), max(0.0, b[3] - b[1])],
                        "score": s,
                    }
                )
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = {
            "images": images,
            "annotations": annotations,
            "categories": [{"id": k, "name": c} for c, k in cat.items()],
        }
        coco.createIndex()
        if not detections:
            return dict.fromkeys(classes, 0.0)
        ev = COCOeval(coco, coco.loadRes(detections), "bbox")
        ev.evaluate()
        ev.accumulate()
    precision = ev.eval["precision"][0, :, :, 0, -1]  # IoU 0.5, all recall points, classes, area all, 100 dets
    out = {}
    for c, k in cat.items():
        col = precision[:, ev.params.catIds.index(k)]
        out[c] = float(col.mean()) if (col > -1).any() else float("nan")
    return out


def box_metrics(
    gold: Sequence[Sequence[GoldBox]], pred: Sequence[Sequence[PredBox]], use_pycocotools: bool | None = None
) -> BoxMetrics:
    """Boxes per image: ``gold[i]`` = [(class, box)], ``pred[i]`` = [(class, box[, score])]."""
    if len(gold) != len(pred):
        raise ValueError("gold and pred must have one list per image")
    ious = []
    for g_img, p_img in zip(gold, pred, strict=True):
        preds = [_pred(p) for p in p_img]
        for c, b in g_img:
            ious.append(max((box_iou(b, pb) for pc, pb, _ in preds if pc == c), default=0.0))
    use = have_pycocotools() if use_pycocotools is None else use_pycocotools
    ap = (_pycocotools_ap50 if use else coco_ap50)(gold, pred) if ious else {}
    return BoxMetrics(
        n_images=len(gold),
        n_gold=len(ious),
        n_pred=sum(len(p) for p in pred),
        mIoU=_nanmean(ious),
        mAP50=_nanmean(ap.values()),
        AP50=ap,
        backend="pycocotools" if use else "surgview",
    )


# ------------------------------------------------------------------------------------------- MCQ


@dataclass
class McqMetrics(_Result):
    n: int
    correct: int
    accuracy: float


def mcq_accuracy(responses: Sequence[str], labels: Sequence[str]) -> McqMetrics:
    """Accuracy as the Surg-R1 release scorer counts it (``engine.scoring.release_correct``)."""
    if len(responses) != len(labels):
        raise ValueError("one label per response")
    correct = sum(release_correct(r, lb) for r, lb in zip(responses, labels, strict=True))
    return McqMetrics(len(responses), correct, correct / len(responses) if responses else float("nan"))


# --------------------------------------------------------------------------------------- actions
SEGMENT_OVERLAPS = (0.10, 0.25, 0.50)


@dataclass
class ActionMetrics(_Result):
    """Action recognition as the paper reports it (frame accuracy, macro precision/recall/Jaccard)
    and as action-segmentation work reports it (segmental edit score, F1@{10,25,50}); every value a
    fraction in [0, 1] (papers print the segmental ones ×100)."""

    n: int
    videos: int
    accuracy: float
    precision: float  # macro over classes present in the gold labels
    recall: float
    jaccard: float
    edit: float  # segmental edit score, mean over videos
    f1: dict[str, float] = field(default_factory=dict)  # "F1@10", "F1@25", "F1@50": mean over videos
    per_class: dict[str, dict[str, float]] = field(default_factory=dict)


def segments_of(labels: Sequence[int]) -> list[tuple[int, int, int]]:
    """Runs of equal labels: (label, start, end) with ``end`` exclusive, in order."""
    out: list[tuple[int, int, int]] = []
    for i, label in enumerate(labels):
        if out and out[-1][0] == label:
            out[-1] = (label, out[-1][1], i + 1)
        else:
            out.append((int(label), i, i + 1))
    return out


def edit_score(gold: Sequence[int], pred: Sequence[int]) -> float:
    """Segmental edit score (Lea et al. 2016, as MS-TCN computes it): 1 - Levenshtein distance of the
    two sequences of segment labels / the longer one's length; 1 when both are empty."""
    g = [s[0] for s in segments_of(gold)]
    p = [s[0] for s in segments_of(pred)]
    if not g and not p:
        return 1.0
    row = list(range(len(g) + 1))
    for i, pl in enumerate(p, start=1):
        prev, row[0] = row[0], i
        for j, gl in enumerate(g, start=1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (pl != gl))
    return 1.0 - row[len(g)] / max(len(g), len(p))


def segment_f1(gold: Sequence[int], pred: Sequence[int], overlap: float) -> float:
    """F1@overlap of one video (Lea et al.; SAR-RARP50's evaluation ``_f1k``, no background class):
    each predicted segment, in order, is a true positive when its best IoU with a gold segment of its
    label reaches ``overlap`` and that gold segment is not yet matched, else a false positive; gold
    segments never matched are false negatives. 0 when precision + recall is 0 or undefined."""
    gs, ps = segments_of(gold), segments_of(pred)
    used = [False] * len(gs)
    tp = fp = 0
    for label, start, end in ps:
        best, best_iou = -1, -math.inf
        for k, (gl, gs_, ge) in enumerate(gs):
            inter = min(end, ge) - max(start, gs_)
            union = max(end, ge) - min(start, gs_)
            iou = inter / union * (gl == label)
            if iou > best_iou:
                best, best_iou = k, iou
        if best >= 0 and best_iou >= overlap and not used[best]:
            tp += 1
            used[best] = True
        else:
            fp += 1
    fn = len(gs) - sum(used)
    precision = tp / (tp + fp) if tp + fp else float("nan")
    recall = tp / (tp + fn) if tp + fn else float("nan")
    if not (precision + recall > 0):
        return 0.0
    return 2 * precision * recall / (precision + recall)


def action_metrics(
    gold: Sequence[str],
    pred: Sequence[str | None],
    labels: Sequence[str],
    video_ids: Sequence[str] | None = None,
    overlaps: Sequence[float] = SEGMENT_OVERLAPS,
) -> ActionMetrics:
    """Action metrics over frames given per video in temporal order (``video_ids``: one per frame;
    one video when None). Frame metrics are pooled over all frames as :func:`phase_metrics` does (a
    prediction outside ``labels`` is wrong and of no class); the edit score and F1@k are per video,
    then averaged over videos (SAR-RARP50 averages its per-video F1@10 the same way). A frame without
    a prediction forms its own segment of no class (a false positive segment)."""
    g, p = _checked_ids(gold, pred, labels)
    videos = list(video_ids) if video_ids is not None else ["video"] * len(g)
    if len(videos) != len(g):
        raise ValueError("video_ids must have one entry per frame")
    summary = _summary(g, p, g == p, labels)
    edits, f1s = [], {f"F1@{round(o * 100)}": [] for o in overlaps}
    for vid in dict.fromkeys(videos):
        idx = np.array([i for i, v in enumerate(videos) if v == vid])
        gv, pv = g[idx].tolist(), p[idx].tolist()
        edits.append(edit_score(gv, pv))
        for o in overlaps:
            f1s[f"F1@{round(o * 100)}"].append(segment_f1(gv, pv, o))
    return ActionMetrics(
        n=len(g),
        videos=len(edits),
        edit=_nanmean(edits),
        f1={k: _nanmean(v) for k, v in f1s.items()},
        **summary,
    )
