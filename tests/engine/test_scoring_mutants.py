"""What `surgview-engine score` tells a user, pinned where mutation testing (scripts/mutation.py) found the
scoring tests blind: the printed table, per-class numbers when the model answers a class the labels never
use, rows missing a field, files that are not results, and an empty set."""

from __future__ import annotations

import json
import warnings

import pytest

from engine.scoring import NO_ANSWER, ResultsFileError, read_results, release_normalise, score_rows

CALOT, CLIP = "B. Calot Triangle Dissection", "C. Clipping Cutting"
CHAIN = "<think>\nLevel 1 (Perception): Instruments: Hook. Anatomy: liver.\n</think>\n<answer>{}</answer>"


def _mixed_rows() -> list[dict]:
    return [
        {"response": CHAIN.format(CALOT), "labels": CALOT},  # right, one level
        {"response": "nothing", "labels": CLIP},  # no structure: its whole text is the answer, a class of its own
        {"labels": CLIP},  # no response at all
    ]


def test_the_printed_report_is_the_table_the_user_reads():
    report = score_rows(_mixed_rows())
    assert report.lines() == [
        "rows: 3",
        "accuracy (Surg-R1 release scorer): 0.3333",
        "strict accuracy (canonical labels): 0.3333",
        "macro: precision 0.5000, recall 0.5000, f1 0.5000, jaccard 0.5000",
        "class                        precision    recall        f1   jaccard  support",
        "CalotTriangleDissection         1.0000    1.0000    1.0000    1.0000        1",
        "ClippingCutting                 0.0000    0.0000    0.0000    0.0000        2",
        "parsed: complete 0, partial 1, malformed 2, level1 1, level2 0, level3 0, answer 2",
    ]


def test_classes_are_the_labels_classes_even_when_the_model_answers_another():
    # "nothing" and "(no answer)" are predicted but never a label: the table and the macro means keep to the
    # labels' two phases (with the predictions' classes the means would be over four).
    report = score_rows(_mixed_rows())
    assert list(report.per_class) == ["CalotTriangleDissection", "ClippingCutting"]
    assert report.macro == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "jaccard": 0.5}
    clip = report.per_class["ClippingCutting"]
    assert (clip.precision, clip.recall, clip.f1, clip.jaccard, clip.support) == (0.0, 0.0, 0.0, 0.0, 2)
    calot = report.per_class["CalotTriangleDissection"]
    assert (calot.precision, calot.recall, calot.f1, calot.jaccard, calot.support) == (1.0, 1.0, 1.0, 1.0, 1)


def test_a_class_never_predicted_scores_zero_precision_without_a_warning():
    # The score command prints its table; sklearn's undefined-metric warning would land in the middle of it.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = score_rows([{"response": CHAIN.format(CALOT), "labels": CLIP}])
    assert report.per_class["ClippingCutting"].precision == 0.0
    assert report.per_class["ClippingCutting"].f1 == 0.0


def test_every_parse_count_is_reported_and_starts_at_zero():
    report = score_rows(_mixed_rows())
    assert report.parsed == {
        "complete": 0,
        "partial": 1,  # the row with no response is an empty (partial) chain
        "malformed": 2,
        "level1": 1,
        "level2": 0,
        "level3": 0,
        "answer": 2,
    }
    full = (
        "<think>\nLevel 1 (Perception): Instruments: Hook. Anatomy: liver.\n"
        "Level 2 (Relation): Triplets: hook dissect cystic duct.\n"
        "Level 3 (Context): Phase: Calot Triangle Dissection.\n</think>\n<answer></answer>"
    )
    report = score_rows([{"response": full, "labels": CALOT}])
    assert report.parsed == {
        "complete": 1,
        "partial": 0,
        "malformed": 0,
        "level1": 1,
        "level2": 1,
        "level3": 1,
        "answer": 0,  # an empty <answer></answer> is no answer
    }
    assert report.per_class["CalotTriangleDissection"].recall == 0.0


def test_a_row_missing_its_label_is_scored_against_no_answer():
    report = score_rows([{"response": CHAIN.format("Hook")}])
    assert list(report.per_class) == [NO_ANSWER] and report.accuracy == 0.0
    # an answer naming no phase is its own normalised class
    report = score_rows([{"response": CHAIN.format("Grasper, Hook"), "labels": "grasper, hook"}])
    assert list(report.per_class) == ["grasper,hook"] and report.strict_accuracy == 1.0


def test_no_rows_score_zero():
    report = score_rows([])
    assert (report.n, report.accuracy, report.strict_accuracy) == (0, 0.0, 0.0)
    assert report.per_class == {} and report.macro == {}


def test_a_label_that_is_not_text_normalises_to_nothing():
    assert release_normalise(None) == "" and release_normalise(3) == ""


def test_results_are_read_in_order_with_their_fields(tmp_path):
    path = tmp_path / "results.jsonl"
    rows = [{"response": "<answer>a</answer>", "labels": "a", "id": 1}, {"response": "b", "labels": "c", "id": 2}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    assert read_results(path) == rows


@pytest.mark.parametrize(
    "line",
    ['["response", "labels"]', '"response labels"', '{"labels": "a"}', '{"response": "a"}', '{"RESPONSE": 1}'],
)
def test_a_line_that_is_not_a_result_is_refused_with_its_number(tmp_path, line):
    path = tmp_path / "r.jsonl"
    path.write_text('{"response": "x", "labels": "y"}\n' + line + "\n")
    with pytest.raises(ResultsFileError, match=r"r\.jsonl:2: expected an object with 'response' and 'labels'"):
        read_results(path)


def test_an_empty_results_file_says_so(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("\n")
    with pytest.raises(ResultsFileError, match=r"empty\.jsonl: no results"):
        read_results(path)
