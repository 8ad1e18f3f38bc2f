from __future__ import annotations

import json

import pytest

from engine.scoring import ResultsFileError, read_results, release_correct, release_normalise, score_rows

LABEL = "B. Calot Triangle Dissection"


@pytest.mark.parametrize(
    "response, right",
    [
        ("<think>Level 1: ...</think><answer>B. Calot Triangle Dissection</answer>", True),
        ("<answer>Calot Triangle Dissection</answer>", True),
        ("The answer is Calot Triangle Dissection", True),
        ("<answer>calot triangle</answer>", True),  # contained in the label: the release counts it
        ("<answer>C. Clipping Cutting</answer>", False),
        ("<answer>B</answer>", False),  # a bare letter: "b" is not in "calottriangledissection"
        ("", False),
        ("<answer></answer>", False),
    ],
)
def test_release_scorer_rules(response, right):
    assert release_correct(response, LABEL) is right


def test_normal_form():
    assert release_normalise("<answer> B. Calot Triangle Dissection </answer>") == "calottriangledissection"
    assert release_normalise("The answer is: C. Clipping Cutting") == "clippingcutting"


def rows(pairs):
    return [
        {"response": f"<think>Level 1: x. Level 2: y. Level 3: z.</think><answer>{p}</answer>", "labels": g}
        for p, g in pairs
    ]


def test_report_gives_release_accuracy_and_per_class_metrics():
    report = score_rows(
        rows(
            [
                ("B. Calot Triangle Dissection", LABEL),
                ("C. Clipping Cutting", LABEL),
                ("C. Clipping Cutting", "C. Clipping Cutting"),
                ("D. Gallbladder Dissection", "D. Gallbladder Dissection"),
            ]
        )
    )
    assert report.n == 4 and report.accuracy == 0.75 and report.strict_accuracy == 0.75
    calot = report.per_class["CalotTriangleDissection"]
    assert (calot.precision, calot.recall, calot.support) == (1.0, 0.5, 2)
    clip = report.per_class["ClippingCutting"]
    assert (clip.precision, clip.recall, round(clip.jaccard, 3)) == (0.5, 1.0, 0.5)
    assert report.parsed["complete"] == 4 and report.parsed["level3"] == 4
    assert json.loads(json.dumps(report.to_dict()))["accuracy"] == 0.75


def test_unparsed_responses_count_as_no_answer():
    report = score_rows([{"response": "I cannot tell.", "labels": LABEL}])
    assert report.accuracy == 0.0 and report.strict_accuracy == 0.0
    assert report.parsed["malformed"] == 1


def test_bad_results_files(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"response": "x", "labels": "y"}\nnot json\n')
    with pytest.raises(ResultsFileError, match=r"r.jsonl:2: not JSON"):
        read_results(path)
    path.write_text('{"response": "x"}\n')
    with pytest.raises(ResultsFileError, match="'labels'"):
        read_results(path)
    with pytest.raises(ResultsFileError, match="cannot read"):
        read_results(tmp_path / "absent.jsonl")
