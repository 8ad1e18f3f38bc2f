"""A recipe that continues a model folder with extra base-model keys (grow, mrope), and the base model it builds."""

from __future__ import annotations

from pathlib import Path


def recipe_text(model: Path, out: Path, extra: str) -> str:
    return (
        f"name: r\nout: {out}\nbase_model: {model}\n"
        f"data: {{synthetic: {{train_cases: 1, test_cases: 1, minutes: 0.1}}}}\n{extra}\n"
    )


def built_base(model: Path, tmp_path: Path, extra: str) -> Path:
    """Load and check the recipe, then build its base model (in ``tmp_path/run``) as a run does."""
    from train.pipeline import _base_model, check_recipe, load_pipeline_recipe

    path = tmp_path / "r.yaml"
    path.write_text(recipe_text(model, tmp_path / "run", extra))
    recipe = load_pipeline_recipe(path)
    check_recipe(recipe)
    return _base_model(recipe, tmp_path / "run")
