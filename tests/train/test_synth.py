from __future__ import annotations

import csv
import itertools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from engine.ontology import load_ontology
from engine.phase_labels import read_cholec80_phases, segments
from engine.tasks import Task
from train.synth.generate import SynthConfig, SynthError, generate
from train.synth.render import CaseRenderer
from train.synth.script import PHASES, STRUCTURES_SEEN, TRIANGLE_CLEARED, build_script


def decoded_frames(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def test_video_decodes_to_the_frame_count_the_labels_claim(synth_case):
    out, summary = synth_case
    case = summary["cases"][0]
    video = out / "cholec80" / "videos" / "video01.mp4"
    phases = read_cholec80_phases(out / "cholec80" / "phase_annotations" / "video01-phase.txt")
    assert decoded_frames(video) == len(phases) == case["frames"] == 1500
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.name, stream.width, stream.height) == ("h264", 320, 180)
        assert stream.average_rate == 25


@pytest.mark.skipif(shutil.which("ffprobe") is None, reason="ffmpeg is installed by ./dev.sh")
def test_ffmpeg_agrees_on_the_frame_count(synth_case):
    out, summary = synth_case
    result = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-count_frames",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=nb_read_frames",
            "-of",
            "csv=p=0",
            str(out / "cholec80" / "videos" / "video01.mp4"),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert int(result.stdout.strip()) == summary["cases"][0]["frames"]


def test_phases_run_in_clinical_order(synth_case):
    out, _ = synth_case
    phases = read_cholec80_phases(out / "cholec80" / "phase_annotations" / "video01-phase.txt")
    assert [s.label for s in segments(phases)] == list(PHASES)


def test_calot_dissection_is_the_longest_early_phase():
    script = build_script(1, 25 * 600, 25, seed=5)
    lengths = {name: end - start for name, start, end in script.phase_bounds}
    assert lengths["CalotTriangleDissection"] > 3 * lengths["Preparation"]
    assert lengths["GallbladderDissection"] > 2 * lengths["GallbladderPackaging"]


def test_tool_file_has_cholec80_columns_every_25th_frame(synth_case):
    out, _ = synth_case
    lines = (out / "cholec80" / "tool_annotations" / "video01-tool.txt").read_text().splitlines()
    assert lines[0].split("\t") == [
        "Frame",
        "Grasper",
        "Bipolar",
        "Hook",
        "Scissors",
        "Clipper",
        "Irrigator",
        "SpecimenBag",
    ]
    frames = [int(line.split("\t")[0]) for line in lines[1:]]
    assert frames == list(range(0, 1500, 25))
    assert all(set(line.split("\t")[1:]) <= {"0", "1"} for line in lines[1:])


def tools_by_phase(out: Path) -> dict[str, set[str]]:
    phases = read_cholec80_phases(out / "cholec80" / "phase_annotations" / "video01-phase.txt")
    lines = (out / "cholec80" / "tool_annotations" / "video01-tool.txt").read_text().splitlines()
    header = lines[0].split("\t")[1:]
    seen: dict[str, set[str]] = {}
    for line in lines[1:]:
        frame, *flags = line.split("\t")
        seen.setdefault(phases[int(frame)], set()).update(t for t, f in zip(header, flags, strict=False) if f == "1")
    return seen


def test_instruments_follow_the_phase(synth_case):
    seen = tools_by_phase(synth_case[0])
    assert "Clipper" in seen["ClippingCutting"] and "Scissors" in seen["ClippingCutting"]
    assert "Hook" in seen["CalotTriangleDissection"]
    assert "SpecimenBag" in seen["GallbladderPackaging"]
    assert "Irrigator" in seen["CleaningCoagulation"] or "Bipolar" in seen["CleaningCoagulation"]
    for phase in ("Preparation", "CalotTriangleDissection", "GallbladderDissection"):
        assert "Clipper" not in seen[phase] and "SpecimenBag" not in seen[phase]


def test_cholect50_labels_are_valid_triplets_with_normalised_boxes(synth_case, ontology):
    out, _ = synth_case
    data = json.loads((out / "CholecT50" / "labels" / "VID01.json").read_text())
    assert data["fps"] == 1 and data["num_frames"] == len(data["annotations"]) == 60
    assert data["categories"]["phase"]["1"] == "carlot-triangle-dissection"
    assert len(data["categories"]["triplet"]) == 100
    triplets_seen = set()
    for _frame_id, rows in data["annotations"].items():
        for row in rows:
            assert len(row) == 15
            if row[0] == -1:
                continue
            i, v, t = (label.id for label in ontology.triplet(row[0]))
            assert (row[1], row[7], row[8]) == (i, v, t)
            x, y, w, h = row[3:7]
            assert 0 <= x <= 1 and 0 <= y <= 1 and 0 < w <= 1 and 0 < h <= 1 and x + w <= 1.0001
            triplets_seen.add(ontology.triplet_name(row[0]))
    assert {"clipper,clip,cystic_duct", "scissors,cut,cystic_artery", "grasper,retract,gallbladder"} <= triplets_seen


def test_cvs_is_achieved_during_calot_dissection_before_clipping():
    for seed in range(6):
        script = build_script(1, 25 * 300, 25, seed=seed)
        calot0, calot1 = script.phase_span("CalotTriangleDissection")
        first_clip = min(min(times) for times in script.clip_times.values())
        history = np.array([script.cvs(f) for f in range(0, script.n_frames, 25)])
        assert not history[: calot0 // 25].any(), "no criterion is met before Calot dissection"
        assert (np.diff(history.astype(int), axis=0) >= 0).all(), "criteria never regress"
        at_clip = script.cvs(first_clip)
        assert at_clip[0] and at_clip[1]
        assert at_clip[2] == (not script.c3_missed)
        met = [f for f in range(script.n_frames) if all(script.cvs(f))]
        if met:
            assert calot0 <= met[0] < calot1


def test_each_cvs_criterion_is_met_where_level_1_lists_its_evidence():
    """A chain's perception carries its CVS calls: wherever the structures are in view, C1 is met exactly when the
    cystic duct and artery are listed, C2 exactly when the Calot fat is no longer listed, C3 exactly when the cystic
    plate is (before the gallbladder comes away from it)."""
    script = build_script(3, 25 * 90, 25, seed=2)
    renderer = CaseRenderer(script, 320, 180)
    calot0, calot1 = script.phase_span("CalotTriangleDissection")
    checked = [0, 0, 0]
    for frame in range(calot0, calot1, 12):
        truth = renderer.render(frame)[1]
        met = [value >= 0.5 for value in truth.cvs]
        view = renderer.view_matrix(frame)
        shows = lambda anchor, view=view: renderer.anchor_in_view(view, anchor)  # noqa: E731
        if shows("cystic_duct"):
            assert met[0] == ("cystic_duct" in truth.anatomy and "cystic_artery" in truth.anatomy), frame
            checked[0] += 1
        if shows("peritoneum"):
            assert met[1] == ("calot_triangle" not in truth.anatomy), frame
            checked[1] += 1
        if shows("cystic_plate"):
            assert met[2] == ("cystic_plate" in truth.anatomy), frame
            checked[2] += 1
    assert min(checked) >= 10, checked


def _under_fat(renderer: CaseRenderer, cleared: float) -> list[float]:
    """Share of the cystic duct's and the artery's pixels still under fat once ``cleared`` of it is gone."""
    fat, h, w = renderer.fat, renderer.H, renderer.W
    alpha, order = np.zeros((h, w), np.float32), np.ones((h, w), np.float32)
    alpha[fat.y : fat.y + fat.alpha.shape[0], fat.x : fat.x + fat.alpha.shape[1]] = fat.alpha
    order[fat.y : fat.y + fat.order.shape[0], fat.x : fat.x + fat.order.shape[1]] = fat.order
    shares = []
    for path, width in renderer.tubes():
        tube = np.zeros((h, w), np.uint8)
        cv2.polylines(tube, [renderer._tube_points(path, 0, 0).astype(np.int32)], False, 255, int(width * w / 960))
        on = tube > 0
        shares.append(float(np.mean((alpha[on] > 0.3) & (order[on] >= cleared))))
    return shares


@pytest.mark.parametrize("seed", [2, 5, 7])
def test_the_duct_and_artery_stay_under_fat_until_the_truth_lists_them(seed):
    """What the picture shows is what the truth says: before C1 is met both structures are hidden, from then on
    both are in plain view (the fat on them was once cleared first, showing them 10-15% of the dissection early)."""
    script = build_script(3, 25 * 90, 25, seed=seed)
    renderer = CaseRenderer(script, 640, 360)
    calot0, calot1 = script.phase_span("CalotTriangleDissection")
    seen = hidden = 0
    for frame in range(calot0, calot1, 6):
        cleared = script.fat_cleared(frame)
        duct, artery = _under_fat(renderer, cleared)
        if cleared >= STRUCTURES_SEEN:
            assert max(duct, artery) <= 0.05, (frame, cleared, duct, artery)
            seen += 1
        elif cleared < 0.85 * STRUCTURES_SEEN:
            assert min(duct, artery) >= 0.95, (frame, cleared, duct, artery)
            hidden += 1
    assert seen >= 10 and hidden >= 10, (seen, hidden)


def _calot_fat_left(renderer: CaseRenderer, cleared: float) -> float:
    """Share of the Calot fat (by opacity) still in the picture once ``cleared`` of it is gone."""
    fat = renderer.fat
    return float((fat.alpha * (fat.order >= cleared)).sum() / fat.alpha.sum())


@pytest.mark.parametrize("seed", [2, 5, 7])
def test_calot_fat_stays_in_view_until_the_truth_calls_the_triangle_cleared(seed):
    """C2 ("hepatocystic triangle cleared") is met where the truth stops listing the triangle's fat: the picture
    must still show fat just before that and none from it. Once the fat was gone by 60% of the dissection while the
    truth said "not cleared" until 90%, so no model could see the difference."""
    script = build_script(3, 25 * 90, 25, seed=seed)
    renderer = CaseRenderer(script, 640, 360)
    left = {c: _calot_fat_left(renderer, c) for c in (0.6, 0.8, 0.85, TRIANGLE_CLEARED)}
    assert left[0.6] >= 0.25 and left[0.8] >= 0.1 and left[0.85] >= 0.03, left
    assert left[TRIANGLE_CLEARED] == 0.0, left
    assert left[0.6] > left[0.8] > left[0.85]  # it goes as the dissection goes
    calot0, calot1 = script.phase_span("CalotTriangleDissection")
    checked = 0
    for frame in range(calot0, calot1, 10):  # the anatomy list agrees: fat listed while some is in view
        if not renderer.anchor_in_view(renderer.view_matrix(frame), "peritoneum"):
            continue
        listed, cleared = "calot_triangle" in renderer.render(frame)[1].anatomy, script.fat_cleared(frame)
        fat_left = _calot_fat_left(renderer, cleared)
        assert listed or fat_left == 0.0, (frame, cleared, fat_left)
        assert not listed or fat_left > 0 or cleared >= 0.95 * TRIANGLE_CLEARED, (frame, cleared)
        checked += 1
    assert checked >= 10


def _plate_shown(renderer: CaseRenderer, frame: int) -> float:
    """Share of the cystic-plate window (by opacity) that the gallbladder leaves in view at ``frame``."""
    W, H, win = renderer.W, renderer.H, renderer.window
    plate = np.zeros((H, W), np.float32)
    plate[win.y : win.y + win.alpha.shape[0], win.x : win.x + win.alpha.shape[1]] = win.alpha
    M, opacity = renderer._gb_transform(frame)
    gallbladder = cv2.warpAffine(renderer.gb.alpha, M, (W, H), flags=cv2.INTER_LINEAR) * opacity
    return float((plate * (1 - gallbladder)).sum() / plate.sum()) * renderer.plate_lift(frame)


@pytest.mark.parametrize("seed", [2, 5, 7])
def test_the_cystic_plate_comes_into_view_as_the_truth_calls_it_exposed(seed):
    """C3 ("cystic plate exposed") is met where the truth lists the plate: before any of its three raters calls the
    plate exposed the picture must not show it, while only one does at most a sliver, and once two do (met) it must
    be in view below the lifted gallbladder. Once the plate lay wholly under the gallbladder, so no picture before
    gallbladder dissection could tell C3; then a tenth of it showed before any rater called it exposed."""
    script = build_script(3, 25 * 90, 25, seed=seed)
    renderer = CaseRenderer(script, 640, 360)
    calot0, calot1 = script.phase_span("CalotTriangleDissection")
    clip0 = script.phase_span("ClippingCutting")[0]
    shown = {f: (script.cvs_raters(f)[2], _plate_shown(renderer, f)) for f in range(calot0, clip0)}
    hidden = [v for raters, v in shown.values() if raters == 0]
    assert hidden and max(hidden) < 0.02, max(hidden)
    met = [v for f, (_, v) in shown.items() if script.cvs(f)[2]]
    if script.c3_missed:  # the surgeon clipped without exposing the plate: it never shows during dissection
        assert not met and max(v for _, v in shown.values()) < 0.02
        return
    one_rater = [v for raters, v in shown.values() if 0 < raters < 0.5]
    assert max(one_rater, default=0.0) < 0.05, max(one_rater)
    assert met and min(met) >= 0.05 and max(met) >= 0.5, (min(met), max(met))
    values = [shown[f][1] for f in range(calot0, calot1)]
    assert all(b >= a - 1e-6 for a, b in itertools.pairwise(values))  # it opens as the dissection goes


def test_endoscapes_metadata_has_rater_means(synth_case):
    out, _ = synth_case
    with (out / "endoscapes" / "all_metadata.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["vid", "frame", "avg_cvs", "C1", "C2", "C3", "is_ds_keyframe"]
    values = {float(r[c]) for r in rows for c in ("C1", "C2", "C3")}
    assert values <= {0.0, 0.33, 0.67, 1.0} and 1.0 in values


def test_same_seed_same_case_other_seed_other_case(tmp_path):
    config = SynthConfig(cases=1, minutes=0.9, seed=11, width=160, height=90)
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    generate(a, config)
    generate(b, config)
    generate(c, SynthConfig(cases=1, minutes=0.9, seed=12, width=160, height=90))
    for rel in (
        "cholec80/phase_annotations/video01-phase.txt",
        "CholecT50/labels/VID01.json",
        "endoscapes/all_metadata.csv",
    ):
        assert (a / rel).read_bytes() == (b / rel).read_bytes()
    assert (a / "CholecT50/labels/VID01.json").read_bytes() != (c / "CholecT50/labels/VID01.json").read_bytes()
    renderer_a = CaseRenderer(build_script(1, 1350, 25, 11), 160, 90)
    renderer_b = CaseRenderer(build_script(1, 1350, 25, 11), 160, 90)
    assert np.array_equal(renderer_a.render(400)[0], renderer_b.render(400)[0])


def test_cases_written_side_by_side_are_the_cases_written_one_by_one(tmp_path):
    """A training run writes its cases in one process per CPU: every file (videos included) and the summary are
    byte for byte what one process writes, so a recipe's cases do not depend on the machine's cores."""
    config = SynthConfig(cases=2, minutes=0.9, seed=5, width=160, height=90)
    ticks: list[int] = []
    one = generate(tmp_path / "one", config)
    two = generate(tmp_path / "two", config, progress=ticks.append, workers=2)
    assert one == two and [c["video"] for c in two["cases"]] == ["video01", "video02"]
    files = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*") if p.is_file())
    assert len(files) == 2 * 5 + 2  # per case: video, phase, tools, CholecT50, truth; the CSV and synth.json
    for rel in files:
        assert (tmp_path / "two" / rel).read_bytes() == (tmp_path / "one" / rel).read_bytes(), rel
    assert sum(ticks) == 2 * config.frames_per_case


_ONE_CASE = """
import os, sys
from pathlib import Path
from train.synth.generate import SynthConfig, generate
os.sched_setaffinity(0, {int(c) for c in sys.argv[2].split(",")})
generate(Path(sys.argv[1]), SynthConfig(cases=1, minutes=0.9, seed=5, width=320, height=180))
"""


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2, reason="needs 2 CPUs")
def test_a_case_is_the_same_video_on_a_machine_with_fewer_cpus(tmp_path):
    """The GPU machine writes a recipe's cases on 16 CPUs, this one on 2: the encoder's own threads must not follow
    the CPUs it sees, or the model trained there learns from other bytes than the one tested here."""
    cpus = sorted(os.sched_getaffinity(0))
    for name, allowed in (("one", cpus[:1]), ("all", cpus)):
        run = [sys.executable, "-c", _ONE_CASE, str(tmp_path / name), ",".join(map(str, allowed))]
        subprocess.run(run, check=True, cwd=Path(__file__).resolve().parents[2], timeout=120)
    video = "cholec80/videos/video01.mp4"
    assert (tmp_path / "one" / video).read_bytes() == (tmp_path / "all" / video).read_bytes()


def test_frames_have_a_circular_endoscope_field(synth_case):
    out, _ = synth_case
    with av.open(str(out / "cholec80" / "videos" / "video01.mp4")) as container:
        img = next(container.decode(video=0)).to_ndarray(format="rgb24").astype(int)
    h, w, _ = img.shape
    assert img[:4, :4].mean() < 20 and img[-4:, -4:].mean() < 20  # dark corners outside the scope field
    assert img[h // 2 - 10 : h // 2 + 10, w // 2 - 10 : w // 2 + 10].mean() > 60  # lit tissue in the middle


def test_boxes_cover_the_instruments_drawn():
    """Pixels inside an instrument's box change when the instrument is drawn; outside they do not."""
    script = build_script(2, 25 * 60, 25, seed=4)
    renderer = CaseRenderer(script, 320, 180)
    frame = next(
        f for f in range(0, script.n_frames, 10) if any(i.tool == "Hook" for i in renderer.render(f)[1].instances)
    )
    img, truth = renderer.render(frame)
    hook = next(i for i in truth.instances if i.tool == "Hook")
    x1, y1, x2, y2 = (int(v) for v in hook.box)
    crop = img[y1:y2, x1:x2].reshape(-1, 3).astype(int)
    # Instruments are grey metal and black shafts: low saturation, unlike the red-yellow-green tissue.
    saturation = crop.max(1) - crop.min(1)
    assert (saturation < 40).mean() > 0.2


def test_bad_settings_are_refused_clearly(tmp_path):
    with pytest.raises(SynthError, match="--minutes"):
        generate(tmp_path, SynthConfig(minutes=0.1))
    with pytest.raises(SynthError, match="--cases"):
        generate(tmp_path, SynthConfig(cases=0))
    with pytest.raises(SynthError, match="even"):
        generate(tmp_path, SynthConfig(width=321))


def test_more_than_99_cases_go_on_to_three_digit_ids_read_in_number_order(tmp_path):
    from train.data.synthetic import synthetic_samples

    generate(tmp_path, SynthConfig(cases=2, minutes=0.9, seed=3, width=160, height=90, first_id=99))
    assert sorted(p.name for p in (tmp_path / "cholec80" / "videos").iterdir()) == ["video100.mp4", "video99.mp4"]
    samples = synthetic_samples(tmp_path, tasks={Task.FRAME})
    cases = list(dict.fromkeys(s.case for s in samples))
    assert cases == ["video99", "video100"]  # by number, so "the last N cases" (a validation split) are the newest
    last = [s for s in samples if s.case == "video100"]
    assert last and all(s.truth.phase and s.truth.instruments is not None for s in last)
    with pytest.raises(SynthError, match="between 1 and 999"):
        generate(tmp_path / "more", SynthConfig(cases=2, minutes=0.9, first_id=999))


def test_unwritable_destination_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(SynthError, match="cannot write"):
        generate(blocker / "out", SynthConfig(cases=1, minutes=0.9, width=160, height=90))


def test_the_labels_can_be_learned_from_the_pixels(tmp_path):
    """A tiny CNN trained on one case recognises the phases of another case from single frames."""
    torch = pytest.importorskip("torch")
    import cv2

    generate(tmp_path, SynthConfig(cases=2, minutes=1.0, seed=21, width=192, height=108, gop=25))
    names = load_ontology().phase.names

    def data(vid: str):
        xs = []
        with av.open(str(tmp_path / "cholec80" / "videos" / f"{vid}.mp4")) as container:
            for i, frame in enumerate(container.decode(video=0)):
                if i % 3 == 0:
                    xs.append(cv2.resize(frame.to_ndarray(format="rgb24"), (64, 36), interpolation=cv2.INTER_AREA))
        phases = read_cholec80_phases(tmp_path / "cholec80" / "phase_annotations" / f"{vid}-phase.txt")[::3]
        x = torch.tensor(np.array(xs)).permute(0, 3, 1, 2).float() / 255
        return x, torch.tensor([names.index(p) for p in phases])

    (xa, ya), (xb, yb) = data("video01"), data("video02")
    torch.manual_seed(0)
    nn = torch.nn
    net = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 32, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, 7),
    )
    opt = torch.optim.Adam(net.parameters(), 3e-3)
    for _ in range(40):
        perm = torch.randperm(len(xa))
        for i in range(0, len(xa), 64):
            idx = perm[i : i + 64]
            loss = nn.functional.cross_entropy(net(xa[idx]), ya[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        accuracy = (net(xb).argmax(1) == yb).float().mean().item()
    majority = max((yb == k).float().mean().item() for k in range(7))
    assert accuracy > max(0.6, majority + 0.25), (accuracy, majority)
