"""Qwen2.5-VL's grid-dependent indices in numpy, for the torch-free ONNX runtime.

transformers computes these in torch, outside anything a graph can hold (loops over images,
``tolist()``, ``nonzero``): the vision encoder's rotary positions, its window order and
attention segments (:func:`vision_indices`), and the language model's 3-D multimodal rotary
positions (:func:`rope_index`, ``get_rope_index``). The exported graphs take them as inputs;
these functions are line-for-line equivalents, checked against transformers in the tests.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

__all__ = ["VisionIndices", "rope_index", "vision_indices"]


@dataclass(frozen=True)
class VisionIndices:
    """Inputs of the vision graph for a list of image grids (all in window order)."""

    rotary_pos_ids: np.ndarray  # (patches, 2) int64: (row, column) of each patch, permuted into window order
    window_index: np.ndarray  # (patches / merge², ) int64: merge units in window order
    reverse_index: np.ndarray  # (patches / merge², ) int64: window order back to the image's order
    window_segments: np.ndarray  # (patches, ) int64: which attention window each patch is in
    image_segments: np.ndarray  # (patches, ) int64: which image (frame) each patch is in


def _vision_position_ids(grids: np.ndarray, merge: int) -> np.ndarray:
    """``transformers.vision_utils.get_vision_position_ids``: (h, w) per patch, merge-block-major."""
    out = []
    for t, h, w in grids.tolist():
        hpos, wpos = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
        block = (h // merge, merge, w // merge, merge)
        hpos = hpos.reshape(block).transpose(0, 2, 1, 3).reshape(-1)
        wpos = wpos.reshape(block).transpose(0, 2, 1, 3).reshape(-1)
        out.append(np.tile(np.stack([hpos, wpos], axis=-1), (t, 1)))
    return np.concatenate(out, axis=0).astype(np.int64)


def _window_index(grids: np.ndarray, merge: int, window_size: int, patch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """``get_vision_window_index``: merge units reordered window by window, and the windows' bounds."""
    index_parts, cu = [], [0]
    offset = 0
    win = window_size // merge // patch_size
    unit = merge * merge
    for t, h, w in grids.tolist():
        gh, gw = h // merge, w // merge
        index = np.arange(t * gh * gw).reshape(t, gh, gw)
        pad_h, pad_w = win - gh % win, win - gw % win
        nh, nw = (gh + pad_h) // win, (gw + pad_w) // win
        padded = np.pad(index, ((0, 0), (0, pad_h), (0, pad_w)), constant_values=-100)
        padded = padded.reshape(t, nh, win, nw, win).transpose(0, 1, 3, 2, 4).reshape(t, nh * nw, win, win)
        seqlens = (padded != -100).sum(axis=(2, 3)).reshape(-1)
        flat = padded.reshape(-1)
        index_parts.append(flat[flat != -100] + offset)
        cu.extend((np.cumsum(seqlens) * unit + cu[-1]).tolist())
        offset += t * gh * gw
    cu_arr = np.asarray(cu, dtype=np.int64)
    keep = np.concatenate([[True], cu_arr[1:] != cu_arr[:-1]])  # torch.unique_consecutive
    return np.concatenate(index_parts).astype(np.int64), cu_arr[keep]


def _segments(cu_seqlens: np.ndarray) -> np.ndarray:
    return np.repeat(np.arange(len(cu_seqlens) - 1, dtype=np.int64), np.diff(cu_seqlens))


def vision_indices(grids: np.ndarray, *, merge: int, window_size: int, patch_size: int) -> VisionIndices:
    """Everything the vision graph needs besides pixels, for images of grids ``(n, 3)`` (t, h, w)."""
    grids = np.asarray(grids, dtype=np.int64).reshape(-1, 3)
    unit = merge * merge
    positions = _vision_position_ids(grids, merge)
    window_index, cu_window = _window_index(grids, merge, window_size, patch_size)
    positions = positions.reshape(-1, unit, 2)[window_index].reshape(-1, 2)
    frame_lengths = np.repeat(grids[:, 1] * grids[:, 2], grids[:, 0])
    cu_frames = np.concatenate([[0], np.cumsum(frame_lengths)])
    return VisionIndices(
        rotary_pos_ids=np.ascontiguousarray(positions),
        window_index=window_index,
        reverse_index=np.argsort(window_index, kind="stable").astype(np.int64),
        window_segments=_segments(cu_window),
        image_segments=_segments(cu_frames),
    )


def rope_index(
    input_ids: np.ndarray,
    attention_mask: np.ndarray,
    image_grids: np.ndarray | None,
    *,
    image_token_id: int,
    merge: int,
) -> tuple[np.ndarray, np.ndarray]:
    """``Qwen2_5_VLModel.get_rope_index`` for images: positions ``(3, batch, seq)`` and, per row,
    the position of the first generated token (``max + 1``; each later token adds one on all
    three axes, which is what transformers' ``rope_deltas`` amount to). Padding gets 0."""
    batch, seq = input_ids.shape
    positions = np.zeros((3, batch, seq), dtype=np.int64)
    next_pos = np.zeros(batch, dtype=np.int64)
    grids = iter(np.asarray(image_grids, dtype=np.int64).reshape(-1, 3).tolist() if image_grids is not None else [])
    for row in range(batch):
        keep = attention_mask[row].astype(bool)
        kinds = (input_ids[row][keep] == image_token_id).astype(np.int64)
        parts, current = [], 0
        for kind, group in itertools.groupby(kinds.tolist()):
            length = len(list(group))
            if kind == 0:
                parts.append(np.broadcast_to(np.arange(length) + current, (3, length)))
                current += length
            else:
                t, h, w = next(grids)
                gh, gw = h // merge, w // merge
                tt, hh, ww = np.meshgrid(np.arange(t), np.arange(gh) + current, np.arange(gw) + current, indexing="ij")
                parts.append(np.stack([tt.reshape(-1) + current, hh.reshape(-1), ww.reshape(-1)]))
                current += max(h, w) // merge
        if not parts:
            continue
        row_positions = np.concatenate(parts, axis=1)
        positions[:, row, keep] = row_positions
        next_pos[row] = row_positions.max() + 1
    return positions, next_pos
