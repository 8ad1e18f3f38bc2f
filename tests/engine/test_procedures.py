from __future__ import annotations

import json

import pytest

from engine.case_procedure import ProcedureChoiceError, case_procedure, guess_procedure, set_case_procedure
from engine.chain_parser import parse_chain
from engine.ontology import load_ontology
from engine.procedures import DEFAULT_PROCEDURE, ProcedureError, get_procedure, procedure_names
from engine.tasks import Task


def test_the_default_procedure_is_todays_cholecystectomy_ontology():
    chole = get_procedure()
    assert chole.name == DEFAULT_PROCEDURE == "cholecystectomy"
    assert chole.ontology is load_ontology()
    assert chole.cvs and chole.clipping
    assert chole.colour_key("phase", "calot triangle dissection").slot == 1


@pytest.mark.parametrize(
    "spelling, name",
    [
        ("RARP", "rarp"),
        ("robotic suturing", "rarp"),
        ("Roux-en-Y gastric bypass", "bypass"),
        ("LRYGB", "bypass"),
        ("lap chole", "cholecystectomy"),
        ("EndoVis 2017", "robotic"),
        ("", "cholecystectomy"),
    ],
)
def test_procedures_resolve_from_any_spelling(spelling, name):
    assert get_procedure(spelling).name == name


def test_an_unknown_procedure_names_the_known_ones():
    with pytest.raises(ProcedureError, match="rarp"):
        get_procedure("appendectomy")


def test_only_cholecystectomy_has_cvs_and_clipping():
    others = [get_procedure(n) for n in procedure_names() if n != "cholecystectomy"]
    assert others and not any(p.cvs or p.clipping or p.has("cvs_criterion") for p in others)
    assert all(Task.CVS not in p.tasks for p in others)


def test_every_task_a_procedure_lists_is_a_task():
    for name in procedure_names():
        assert {Task(t) for t in get_procedure(name).tasks}


def test_sar_rarp50_actions_have_the_datasets_ids_and_names():
    action = get_procedure("rarp").vocabulary("action")
    assert [(lab.id, lab.display) for lab in action] == [
        (0, "Other"),
        (1, "Picking-up the needle"),
        (2, "Positioning the needle tip"),
        (3, "Pushing the needle through the tissue"),
        (4, "Pulling the needle out of the tissue"),
        (5, "Tying a knot"),
        (6, "Cutting the suture"),
        (7, "Returning/dropping the needle"),
    ]
    assert action.resolve("pulling the needle out of the tissue").id == 4
    assert action.resolve("returning or dropping the needle").id == 7  # the Surg-R1 release's wording
    assert action.resolve("picking up the needle").id == 1


def test_multibypass140_has_12_phases_and_46_steps_in_its_ids():
    bypass = get_procedure("bypass")
    assert [lab.id for lab in bypass.vocabulary("phase")] == list(range(12))
    assert [lab.id for lab in bypass.vocabulary("step")] == list(range(46))
    assert bypass.vocabulary("phase").resolve("gastrojejunal_anastomosis").id == 3
    assert bypass.vocabulary("step").resolve("s8_vertical_stapling").display == "Vertical stapling"
    assert bypass.vocabulary("step").resolve("vertical stapling").id == 8
    assert not bypass.has("action") and not bypass.has("tool")


def test_endovis17_instruments_are_the_robotic_tools():
    tools = get_procedure("rarp").vocabulary("tool")
    assert tools is get_procedure("robotic").vocabulary("tool")
    assert [lab.id for lab in tools] == list(range(1, 8))
    assert tools.resolve("Maryland Bipolar Forceps").name == "Bipolar_Forceps"
    assert tools.resolve("needle driver").name == "Large_Needle_Driver"


def test_transition_priors_leave_each_state_with_at_most_probability_one():
    for name in procedure_names():
        proc = get_procedure(name)
        for role in proc.transitions:
            out: dict[str, float] = {}
            for src, dst, weight in proc.transition_prior(role):
                assert src != dst and weight > 0
                out[src] = out.get(src, 0.0) + weight
            assert max(out.values()) <= 1.0 + 1e-9
    assert ("picking_up_the_needle", "positioning_the_needle_tip", 0.85) in get_procedure("rarp").transition_prior(
        "action"
    )


def test_colour_keys_are_stable_slots_of_a_named_palette():
    keys = get_procedure("rarp").colour_keys("action")
    assert str(keys["picking_up_the_needle"]) == "okabe_ito/0"
    assert len({k.slot for k in keys.values()}) == 8
    assert get_procedure("rarp").colour_key("action", "no such action") is None


def test_the_chain_parser_reads_another_procedures_level_1_with_its_ontology():
    onto = get_procedure("rarp").ontology
    chain = parse_chain(
        "<think>\nThis is a Level 1 task.\nLevel 1 (Perception): Instruments: Large Needle Driver [1, 2, 30, 40], "
        "Prograsp Forceps. Anatomy: suturing needle, thread.\n</think>\n<answer>Large Needle Driver</answer>",
        onto,
    )
    assert [s.name.label for s in chain.perception.instruments] == ["Large_Needle_Driver", "Prograsp_Forceps"]
    assert [m.label for m in chain.perception.anatomy] == ["suturing_needle", "thread"]
    assert chain.relations is None or chain.relations.triplets == ()


def test_a_case_remembers_its_procedure_by_content(tmp_path, monkeypatch):
    monkeypatch.setenv("SURGVIEW_DATA", str(tmp_path / "data"))
    video = tmp_path / "case.mp4"
    video.write_bytes(b"not really a video, but content to fingerprint")
    assert case_procedure(video).source == "default"
    assert set_case_procedure(video, "RARP").name == "rarp"
    moved = tmp_path / "renamed.mp4"
    video.rename(moved)
    found = case_procedure(moved)
    assert (found.procedure.name, found.source) == ("rarp", "chosen")
    stored = next((tmp_path / "data" / "cases").glob("*.procedure.json"))
    stored.write_text(json.dumps({"procedure": "appendectomy"}))
    with pytest.raises(ProcedureChoiceError, match=r"procedure\.json"):
        case_procedure(moved)


def test_dataset_layouts_hint_the_procedure(tmp_path):
    assert guess_procedure(tmp_path / "video_07" / "video_left.avi") == "rarp"
    assert guess_procedure(tmp_path / "BBP12.mp4") == "bypass"
    assert guess_procedure(tmp_path / "video01.mp4") is None


def test_cli_resolves_another_procedures_labels(capsys):
    from engine.cli import main

    assert main(["ontology", "action", "--resolve", "pulling the needle out of the tissue"]) == 0
    assert capsys.readouterr().out.strip() == (
        "action (rarp): pulling_the_needle_out_of_the_tissue (id 4, Pulling the needle out of the tissue)"
    )
    assert main(["ontology", "--resolve", "tying a knot"]) == 0  # no vocabulary: every procedure is searched
    assert "action (rarp): tying_a_knot" in capsys.readouterr().out
    assert main(["ontology", "phase", "--procedure", "gastric bypass"]) == 0
    assert "phase (12): 0=preparation" in capsys.readouterr().out
    assert main(["ontology", "--procedure", "appendectomy"]) == 1
    assert "unknown procedure 'appendectomy'; known: cholecystectomy, rarp" in capsys.readouterr().err


def test_analyze_refuses_an_unknown_procedure_before_loading_a_model(tmp_path, capsys):
    from engine.cli import main

    video = tmp_path / "case.mp4"
    video.write_bytes(b"x")
    assert main(["analyze", str(video), "--model", str(tmp_path / "no-model"), "--procedure", "appendectomy"]) == 1
    assert "unknown procedure 'appendectomy'" in capsys.readouterr().err


def test_each_case_is_asked_in_its_remembered_procedure(tmp_path, monkeypatch):
    from engine.cli import build_parser
    from engine.cli_commands import _case_profile, _profile

    monkeypatch.setenv("SURGVIEW_DATA", str(tmp_path / "data"))
    chole, rarp = tmp_path / "chole.mp4", tmp_path / "suturing.mp4"
    chole.write_bytes(b"one case")
    rarp.write_bytes(b"another case")
    set_case_procedure(rarp, "rarp")
    args = build_parser().parse_args(["analyze", str(chole), "--model", str(tmp_path), "--profile", "surgview"])
    chosen, cache = _profile(args), {}
    assert _case_profile(args, chole, chosen, cache) is chosen
    asked = _case_profile(args, rarp, chosen, cache)
    assert asked.version == "1.0+rarp" and asked.tasks == ("action",)
    given = build_parser().parse_args(
        ["analyze", str(chole), "--model", str(tmp_path), "--profile", "surgview", "--procedure", "gastric bypass"]
    )
    assert _case_profile(given, chole, _profile(given), {}).version == "1.0+bypass"
    assert case_procedure(chole).procedure.name == "bypass"  # --procedure is remembered for the case
