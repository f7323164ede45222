"""Select: the best objective's trained model and evaluation, for the gate and the registry."""

from typing import List

from kfp import dsl

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def select_best(trainings: dsl.Input[List[dsl.Model]], evaluations: dsl.Input[List[dsl.Artifact]], labels: list,
                best: str, comparison: dsl.Input[dsl.Artifact], model: dsl.Output[dsl.Model],
                results: dsl.Output[dsl.Artifact]):
    """Copies the training output and the evaluation of objective ``best`` (``labels``: the plan's
    items, in iteration order) to ``model`` and ``results``, with the comparison beside the
    evaluation (``results/comparison/``) and its verdict in the metadata."""
    import shutil
    from pathlib import Path

    from amopo.compare.select import select_best as select

    names = [item["label"] if isinstance(item, dict) else str(item) for item in labels]
    train_dir, eval_dir = select(names, [Path(m.path) for m in trainings], [Path(e.path) for e in evaluations],
                                 best)
    shutil.copytree(train_dir, model.path, dirs_exist_ok=True)
    shutil.copytree(eval_dir, results.path, dirs_exist_ok=True)
    shutil.copytree(comparison.path, Path(results.path) / "comparison", dirs_exist_ok=True)
    source = trainings[names.index(best)]
    model.metadata.update({**source.metadata, "comparison_best": best, "compared": names})
    results.metadata.update({"comparison_best": best, "compared": names})
    print(f"best objective: {best} (of {', '.join(names)})")
