"""Model profiles and the merged frame record: a model is asked the way it was trained, and its
several answers about one frame become one record with boxes in the source frame's pixels."""

from __future__ import annotations

import json

import numpy as np
import pytest

from engine.backends.transformers_backend import batch_size_for_memory, kv_cache_bytes
from engine.frame_record import case_analyses, merge_results, merge_timeline_rows
from engine.modeldir import MANIFEST_NAME
from engine.profiles import (
    PROFILE_NAMES,
    ProfileError,
    get_profile,
    profile_for_version,
    qwen_grid_size,
    resolve_profile,
)
from engine.prompts import frame_prompt
from engine.store import CaseStore, FrameResult
from engine.timeline import TimelineRow

RELEASE_SYSTEM = (
    "A conversation between User and Surgical Assistant. The user asks a question related, and the Assistant solves "
    "it. The assistant first thinks about the reasoning process in the mind and then provides the user with the "
    "answer. The reasoning process and answer are enclosed within <think> </think> and <answer> </answer> tags, "
    "respectively, i.e., <think> reasoning process here </think><answer> answer here </answer>"
)
RELEASE_QUESTIONS = [
    "Given the laparoscopic cholecystectomy image <image>, which surgical phase is being performed?",
    "Given the laparoscopic cholecystectomy image <image>, describe the complete surgical action in terms of tool, "
    "action, and tissue.",
    "Given the laparoscopic cholecystectomy image <image>, locate all the tools in the format of bbox (x1,y1), (x2,y2).",
]
PHASE_ANSWER = (
    "<think> Level 1: A grasper and a hook are visible; the gallbladder and liver are in view. Level 2: The hook "
    "dissects the cystic duct while the grasper retracts the gallbladder. Level 3: The cystic duct is being dissected "
    "in Calot's triangle, so the phase is Calot Triangle Dissection. </think><answer>Calot Triangle Dissection</answer>"
)
ACTION_ANSWER = (
    "<think> Level 1: A grasper and a hook. Level 2: The grasper retracts the gallbladder; the hook dissects the cystic "
    "duct. Level 3: Calot Triangle Dissection. </think><answer>Grasper Retract Gallbladder, Hook Dissect Cystic_duct"
    "</answer>"
)
LOCATE_ANSWER = (
    "<think> Level 1: A grasper at the top left and a hook in the centre. Level 2: The hook dissects. Level 3: "
    "Preparation. </think><answer>Grasper (84,42), (252,210), Hook (420,238), (588,406)</answer>"
)


def test_surg_r1_profile_is_the_release_serving_setup_verbatim():
    profile = get_profile("surg-r1")
    assert profile.system == RELEASE_SYSTEM
    assert [q.prompt for q in profile.questions] == RELEASE_QUESTIONS
    assert profile.tasks == ("phase", "triplet", "localisation")
    frame = np.full((1080, 1920, 3), 7, np.uint8)
    sent = profile.prepare_image(frame)
    assert sent.shape == (476, 840, 3) and sent.dtype == np.uint8
    request = profile.request("localisation", sent, 1920, 1080)
    assert (request.system, request.prompt) == (RELEASE_SYSTEM, RELEASE_QUESTIONS[2])
    assert (request.temperature, request.top_p, request.max_new_tokens) == (0.1, 0.95, 1024)
    assert profile.box_scale(1680, 952) == (2.0, 2.0)


def test_surgview_profile_asks_todays_prompt_unchanged():
    profile = get_profile("surgview")
    today = frame_prompt("frame_analysis", 854, 480)
    request = profile.request("frame_analysis", None, 854, 480)
    assert (request.prompt, request.system, profile.version) == (today.text, today.system, today.version)
    assert (request.temperature, request.max_new_tokens) == (0.0, 768)
    frame = np.zeros((480, 854, 3), np.uint8)
    assert profile.prepare_image(frame) is frame  # sent as it is: boxes are in source pixels
    assert get_profile("surgview", "phase_mcq").tasks == ("phase_mcq",)


def test_qwen_vl_profile_sizes_frames_on_qwens_grid_and_states_that_size():
    profile = get_profile("qwen-vl")
    w, h = profile.sent_size(1920, 1080)
    assert w % 28 == 0 and h % 28 == 0 and w * h <= 1003520 and abs(w / h - 16 / 9) < 0.05
    assert f"({w}x{h} pixels)" in profile.prompt("frame_analysis", 1920, 1080)
    small = qwen_grid_size(320, 180)
    assert small[0] * small[1] >= 200704 and small[0] % 28 == 0


def test_unknown_profile_and_a_task_the_profile_does_not_ask_are_refused():
    with pytest.raises(ProfileError, match="unknown model profile 'gpt'"):
        get_profile("gpt")
    with pytest.raises(ProfileError, match="drop --task"):
        get_profile("surg-r1", "cvs")
    assert set(PROFILE_NAMES) == {"surgview", "surg-r1", "qwen-vl", "qwen3-vl"}
    assert [profile_for_version(v) for v in ("1.0", "surg-r1-release", "qwen-vl-1.0", "qwen3-vl-1.0+rarp")] == [
        "surgview",
        "surg-r1",
        "qwen-vl",
        "qwen3-vl",
    ]


FRAME_ANSWER = (
    "<think>\nLevel 1 (Perception): Instruments: Grasper [500, 500, 750, 1000]. Anatomy: liver.\n"
    "Level 2 (Relation): Triplets: grasper retract gallbladder.\n"
    "Level 3 (Context): Phase: Preparation. CVS: C1 not met, C2 not met, C3 not met. Safety: none.\n</think>\n"
    "<answer>Phase: Preparation. Triplets: grasper retract gallbladder. CVS: C1 not met, C2 not met, C3 not met."
    "</answer>"
)


def test_a_qwen3_vl_is_asked_for_boxes_in_thousandths_and_they_land_on_the_source_frame():
    # Qwen3-VL writes boxes as 0-1000 of the image's width and height; read as pixels of the sent image they would
    # be drawn on the wrong part of the frame.
    profile = get_profile("qwen3-vl")
    asked = profile.system + profile.prompt("frame_analysis", 1920, 1080)
    assert "from 0 to 1000" in asked and "pixels of the" not in asked
    w, h = profile.sent_size(1920, 1080)
    assert w % 32 == 0 and h % 32 == 0 and abs(w / h - 16 / 9) < 0.05
    stored = {
        "frame_analysis": FrameResult.from_text(3, "openai:qwen3", profile.version, "frame_analysis", FRAME_ANSWER)
    }
    record = merge_results(get_profile(profile_for_version(profile.version)), stored, 1920, 1080)
    assert record.to_json()["instruments"] == [{"label": "Grasper", "box": [960.0, 540.0, 1440.0, 1080.0]}]
    as_pixels = merge_results(get_profile("qwen-vl"), stored, 1920, 1080)
    assert as_pixels.to_json()["instruments"][0]["box"] != [960.0, 540.0, 1440.0, 1080.0]
    # another procedure's prompts ask in thousandths too
    rarp = get_profile("qwen3-vl", procedure="rarp")
    assert "from 0 to 1000" in rarp.system and "pixels of the" not in rarp.system
    assert rarp.box_scale(1280, 720) == (1.28, 0.72)


def _folder(tmp_path, name, manifest=None):
    folder = tmp_path / name
    folder.mkdir()
    if manifest is not None:
        manifest = {
            "format_version": 1,
            "name": name,
            "base_architecture": "Qwen2_5_VLForConditionalGeneration",
            "ontology_version": "1.0",
            "prompts_version": "1.0",
            **manifest,
        }
        (folder / MANIFEST_NAME).write_text(json.dumps(manifest))
    return str(folder)


def test_the_default_profile_follows_the_manifest_and_says_why(tmp_path):
    named = resolve_profile(None, kind="transformers", model=_folder(tmp_path, "m1", {"profile": "surg-r1"}))
    assert named[0].name == "surg-r1" and "manifest" in named[1]
    ours = resolve_profile(None, kind="transformers", model=_folder(tmp_path, "m2", {}))
    assert ours[0].name == "surgview"
    release = resolve_profile(None, kind="transformers", model=_folder(tmp_path, "Surg-R1-7B"))
    assert release[0].name == "surg-r1" and "--profile" in release[1]
    plain = resolve_profile(None, kind="openai", model="Qwen2.5-VL-3B-Instruct")
    assert plain[0].name == "qwen-vl" and "default" in plain[1]
    served3 = resolve_profile(None, kind="openai", model="Qwen/Qwen3-VL-8B-Instruct")
    assert served3[0].name == "qwen3-vl" and "Qwen3-VL" in served3[1]
    for arch, expected in (
        ("Qwen3VLForConditionalGeneration", "qwen3-vl"),
        ("Qwen2_5_VLForConditionalGeneration", "qwen-vl"),
    ):
        folder = tmp_path / arch
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps({"architectures": [arch]}))
        assert resolve_profile(None, kind="transformers", model=str(folder))[0].name == expected
    chosen = resolve_profile("surgview", kind="openai", model="Surg-R1")
    assert chosen[0].name == "surgview"
    with pytest.raises(ProfileError, match="does not know"):
        resolve_profile(None, kind="transformers", model=_folder(tmp_path, "m3", {"profile": "mystery"}))


def _release_results(frame=5, model="openai:surg-r1@x", version="surg-r1-release"):
    answers = {"phase": PHASE_ANSWER, "triplet": ACTION_ANSWER, "localisation": LOCATE_ANSWER}
    return {task: FrameResult.from_text(frame, model, version, task, text) for task, text in answers.items()}


def test_the_release_answers_merge_into_one_record_with_boxes_in_source_pixels():
    record = merge_results(get_profile("surg-r1"), _release_results(), 1680, 952)
    assert record.complete and record.status == "complete"
    assert record.phase.label == "CalotTriangleDissection"  # the phase question's, not the localisation's
    data = record.to_json()
    assert data["phase"] == "CalotTriangleDissection"
    assert data["instruments"] == [
        {"label": "Grasper", "box": [168.0, 84.0, 504.0, 420.0]},
        {"label": "Hook", "box": [840.0, 476.0, 1176.0, 812.0]},
    ]
    assert data["triplets"] == ["grasper retract gallbladder", "hook dissect cystic_duct"]
    assert data["cvs"] == {"C1": None, "C2": None, "C3": None}
    chain = record.to_chain()
    assert chain.perception.instruments[0].box == (168.0, 84.0, 504.0, 420.0)
    assert chain.context.phase.label == "CalotTriangleDissection"


def test_a_frame_missing_a_question_says_so_and_keeps_what_it_has():
    results = _release_results()
    del results["localisation"]
    record = merge_results(get_profile("surg-r1"), results, 840, 476)
    assert not record.complete and record.missing == ("localisation",)
    assert [s.box for s in record.instruments] == [None, None]  # named in Level 1, no box yet


def test_timeline_rows_merge_phase_cvs_first_stated_and_tools_together():
    met = ("met", "met", "met")
    phase_rows = [TimelineRow(0, "Preparation", (None,) * 3, ()), TimelineRow(25, None, (None,) * 3, None)]
    tool_rows = [TimelineRow(0, "CleaningCoagulation", met, ("Hook",)), TimelineRow(25, "ClippingCutting", met, ())]
    merged = merge_timeline_rows([phase_rows, tool_rows])
    assert [(r.frame, r.phase, r.cvs, r.tools) for r in merged] == [
        (0, "Preparation", met, ("Hook",)),
        (25, "ClippingCutting", met, ()),
    ]


def test_a_stored_multi_question_analysis_is_one_analysis(tmp_path):
    with CaseStore.open(tmp_path / "case.sqlite") as store:
        for frame in (0, 25):
            for result in _release_results(frame).values():
                store.put_result(result)
        store.put_result(FrameResult.from_text(0, "local@1", "1.0", "frame_analysis", PHASE_ANSWER))
        analyses = case_analyses(store)
        release = next(a for a in analyses if a.profile.name == "surg-r1")
        assert release.tasks == ("phase", "triplet", "localisation") and release.frames == 2
        rows = release.timeline_rows(store)
        assert [(r.frame, r.phase) for r in rows] == [(0, "CalotTriangleDissection"), (25, "CalotTriangleDissection")]
        assert set(release.frame_results(store, 25)) == {"phase", "triplet", "localisation"}
        assert release.statuses(store) == [(0, "complete"), (25, "complete")]
        own = next(a for a in analyses if a.profile.name == "surgview")
        assert own.tasks == ("frame_analysis",)


def test_batch_size_follows_free_gpu_memory():
    # Qwen2.5-VL-3B's text model: 36 layers, 2 KV heads of 128, bf16; 1024 + 1024 tokens a sequence.
    per_sequence = kv_cache_bytes(layers=36, kv_heads=2, head_dim=128, tokens=2048, dtype_bytes=2)
    assert per_sequence == 75_497_472
    assert batch_size_for_memory(80 << 30, per_sequence) == 64  # capped
    assert batch_size_for_memory(4 << 30, per_sequence) == 28
    assert batch_size_for_memory(10 << 20, per_sequence) == 1
