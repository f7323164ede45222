"""Plan: the objectives one run trains side by side (one ParallelFor iteration each)."""

from kfp import dsl

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def plan_objectives(objectives: str, objective: str, learning_rate: float, beta: float,
                    train_options: dict) -> list:
    """One item per entry of ``objectives`` ("amopo,simpo,dpo", "amopo:weighting=uniform", ...; empty:
    ``objective`` alone): label, objective, learning_rate, beta (< 0: the objective's default) and
    train_options (amopo.compare.plan)."""
    from amopo.compare.plan import plan_objectives as plan

    items = plan(objectives, objective=objective, learning_rate=learning_rate, beta=beta,
                 train_options=train_options)
    print(", ".join(item["label"] for item in items))
    return items
