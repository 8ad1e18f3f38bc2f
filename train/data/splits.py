"""Official dataset splits (lists as data in ``splits.yaml``)."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

import yaml

from train.data.errors import DatasetError

SPLITS_FILE = Path(__file__).with_name("splits.yaml")


@cache
def _splits() -> dict:
    try:
        return yaml.safe_load(SPLITS_FILE.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise DatasetError(SPLITS_FILE, f"cannot read the split lists: {exc}") from exc


def video_number(case: str | int) -> int:
    """The number in a case id: ``video07`` / ``VID07`` / ``7`` → 7."""
    if isinstance(case, int):
        return case
    m = re.search(r"(\d+)\s*$", str(case))
    if not m:
        raise ValueError(f"no video number in case id {case!r}")
    return int(m.group(1))


def _in_ranges(n: int, ranges: dict) -> str | None:
    for split, (lo, hi) in ranges.items():
        if lo <= n <= hi:
            return split
    return None


def cholec80_split(case: str | int, variant: str = "40/40") -> str | None:
    """``train``/``val``/``test`` of a Cholec80 video (variants ``40/40`` and ``32/8/40``); None outside 1-80."""
    table = _splits()["cholec80"]
    if variant not in table:
        raise ValueError(f"unknown Cholec80 split variant {variant!r}; known: {', '.join(table)}")
    return _in_ranges(video_number(case), table[variant])


def cholect50_folds() -> dict[int, list[int]]:
    """The five official cross-validation folds: fold → video numbers."""
    return {int(k): [int(v) for v in vids] for k, vids in _splits()["cholect50"]["crossval"].items()}


def cholect50_fold(case: str | int) -> int | None:
    n = video_number(case)
    for fold, vids in cholect50_folds().items():
        if n in vids:
            return fold
    return None


def cholect50_split(case: str | int, test_fold: int | None = 1, val_fold: int | None = None) -> str | None:
    """Split of a CholecT50 video for cross-validation experiment ``test_fold`` (its fold is ``test``,
    ``val_fold`` if given is ``val``, the rest ``train``). ``test_fold=None`` uses the challenge split."""
    n = video_number(case)
    if test_fold is None:
        for split, vids in _splits()["cholect50"]["challenge"].items():
            if n in vids:
                return split
        return None
    if test_fold not in cholect50_folds():
        raise ValueError(f"CholecT50 has folds 1-5, not {test_fold}")
    fold = cholect50_fold(n)
    if fold is None:
        return None
    if fold == test_fold:
        return "test"
    if val_fold is not None and fold == val_fold:
        return "val"
    return "train"


def endoscapes_split(vid: str | int, root: Path | None = None) -> str | None:
    """Split of an Endoscapes2023 video: from ``{train,val,test}_vids.txt`` under ``root`` when present,
    else from the fallback ranges in ``splits.yaml`` (unverified membership)."""
    n = video_number(vid)
    if root is not None:
        lists = _vid_lists(Path(root))
        if lists:
            for split, vids in lists.items():
                if n in vids:
                    return split
            return None
    return _in_ranges(n, _splits()["endoscapes"]["fallback_ranges"])


@cache
def _vid_lists(root: Path) -> dict[str, set[int]]:
    out: dict[str, set[int]] = {}
    for split in ("train", "val", "test"):
        path = root / f"{split}_vids.txt"
        if not path.exists():
            continue
        vids: set[int] = set()
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            text = line.strip()
            if not text:
                continue
            try:
                vids.add(int(float(text)))
            except ValueError:
                raise DatasetError(path, f"expected a video id, got {text[:40]!r}", number) from None
        out[split] = vids
    return out


def sar_rarp50_split(video_folder: str | Path) -> str | None:
    """``train``/``test`` of a SAR-RARP50 ``video_NN`` folder, from the split folder it sits in."""
    return _splits()["sar_rarp50"]["folders"].get(Path(video_folder).parent.name)


def multibypass140_split(video: str, fold: int = 0, root: str | Path | None = None) -> str | None:
    """``train``/``val``/``test`` of a MultiBypass140 video (``BBP07``, ``SBP61``) in official fold
    ``fold`` (0-4): from the dataset's split pickles under ``root`` when present, else from the lists
    in ``splits.yaml`` (None where neither says)."""
    if fold not in range(5):
        raise ValueError(f"MultiBypass140 has folds 0-4, not {fold}")
    table = _splits()["multibypass140"]
    match = re.fullmatch(r"([A-Za-z]+)(\d+)", str(video))
    prefixes = {v: k for k, v in table["centres"].items()}
    if match is None or match.group(1).upper() not in prefixes:
        raise ValueError(f"not a MultiBypass140 video id: {video!r}")
    centre, number = prefixes[match.group(1).upper()], int(match.group(2))
    if root is not None:
        from train.data.multibypass140 import official_split_lists

        lists = official_split_lists(Path(root), centre, fold)
        if lists:
            return next(
                (split for split, vids in lists.items() if f"{match.group(1).upper()}{number:02d}" in vids), None
            )
    known = table["folds"].get(centre, {}).get(fold, {})
    for split in ("val", "test"):
        if number in known.get(split, []):
            return split
    if "val" in known and "test" in known and 1 <= number <= int(table["videos_per_centre"]):
        return "train"
    return None


def endovis17_fold(sequence: int) -> int | None:
    """The TernausNet cross-validation fold whose validation set holds training sequence ``sequence``."""
    for fold, sequences in _splits()["endovis17"]["ternausnet_folds"].items():
        if int(sequence) in sequences:
            return int(fold)
    return None
