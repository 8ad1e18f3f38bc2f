from __future__ import annotations

import pytest

from engine.ontology import OntologyError, UnknownLabelError, load_ontology


def test_vocabulary_sizes_match_the_datasets(ontology):
    assert [len(ontology.phase), len(ontology.tool)] == [7, 7]  # Cholec80
    assert [len(ontology.instrument), len(ontology.verb), len(ontology.target)] == [6, 10, 15]  # CholecT50
    assert len(ontology.triplets) == 100
    assert sorted(t.id for t in ontology.triplets) == list(range(100))
    assert ontology.cvs_criterion.names == ["C1", "C2", "C3"]
    assert len(ontology.endoscapes_class) == 6


@pytest.mark.parametrize(
    "spelling",
    [
        "CalotTriangleDissection",
        "Calot Triangle Dissection",
        "carlot-triangle-dissection",
        "calot triangle dissection",
        "CALOT_TRIANGLE_DISSECTION",
        "Calot's triangle dissection",
    ],
)
def test_every_dataset_spelling_of_calot_dissection_resolves(ontology, spelling):
    assert ontology.phase.resolve(spelling).name == "CalotTriangleDissection"


@pytest.mark.parametrize(
    "cholect50, cholec80",
    [
        ("preparation", "Preparation"),
        ("clipping-and-cutting", "ClippingCutting"),
        ("gallbladder-dissection", "GallbladderDissection"),
        ("gallbladder-packaging", "GallbladderPackaging"),
        ("cleaning-and-coagulation", "CleaningCoagulation"),
        ("gallbladder-extraction", "GallbladderRetraction"),
        ("Clipping Cutting", "ClippingCutting"),
        ("Gallbladder Retraction", "GallbladderRetraction"),
    ],
)
def test_cholect50_and_surg_r1_phase_names_map_to_cholec80(ontology, cholect50, cholec80):
    assert ontology.phase.resolve(cholect50).name == cholec80


def test_phase_ids_follow_clinical_order(ontology):
    assert ontology.phase.names == [
        "Preparation",
        "CalotTriangleDissection",
        "ClippingCutting",
        "GallbladderDissection",
        "GallbladderPackaging",
        "CleaningCoagulation",
        "GallbladderRetraction",
    ]


def test_triplet_map_matches_ivtmetrics(ontology):
    # Rows of ivtmetrics' maps.txt: triplet -> instrument, verb, target.
    assert ontology.triplet_name(0) == "grasper,dissect,cystic_plate"
    assert ontology.triplet_name(17) == "grasper,retract,gallbladder"
    assert ontology.triplet_name(79) == "clipper,clip,cystic_duct"
    assert ontology.triplet_name(99) == "irrigator,null_verb,null_target"
    assert ontology.triplet_id("Clipper", "clipping", "cystic duct") == 79
    assert ontology.triplet_id("hook", "clip", "liver") is None  # real names, not a CholecT50 triplet


def test_unknown_name_gives_suggestions_not_a_guess(ontology):
    assert ontology.phase.resolve("Calot Dissectoin") is None
    with pytest.raises(UnknownLabelError) as err:
        ontology.phase.require("Calot Dissectoin")
    assert "Calot Triangle Dissection" in str(err.value)


def test_instruments_map_to_cholec80_tools(ontology):
    for instrument in ontology.instrument:
        assert ontology.tool_for_instrument(instrument).name.lower() == instrument.name


def test_mentions_found_in_prose_with_spans(ontology):
    text = "The grasper retracts the gall bladder; the cystic-duct is clipped."
    found = [(label.name, text[s:e]) for label, s, e in ontology.target.find(text)]
    assert found == [("gallbladder", "gall bladder"), ("cystic_duct", "cystic-duct")]


def test_broken_ontology_files_are_reported_clearly(tmp_path):
    (tmp_path / "ontology.yaml").write_text("version: 1\nvocabularies: {phase: {labels: [{id: 0}]}}\n")
    (tmp_path / "cholect50_triplets.yaml").write_text("triplets: []\n")
    with pytest.raises(OntologyError, match="incomplete"):
        load_ontology.__wrapped__(tmp_path)
    with pytest.raises(OntologyError, match="cannot read"):
        load_ontology.__wrapped__(tmp_path / "missing")
