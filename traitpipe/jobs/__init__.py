"""Workflow steps: each reads its inputs, calls the compute, writes the store.

A job module exposes ``main(argv)``; rules call ``traitpipe job <name> ...``. :data:`JOBS` names every step: the
run's own, and the train and map jobs of the models and map products of :mod:`traitpipe.products`.
"""

from traitpipe.products import MAP_KINDS, MODELS
from traitpipe.registry import Registry

#: name -> the step's ``main(argv)``, imported when a rule runs it.
JOBS = Registry("job")
for _name in dict.fromkeys(["fetch", "ingest", "segment", "sst_finetune", "sam2_train", "phylo_train", "codes", "phylo_eval",
                            "cam_parts", "part_truth", "summarize", "part_effects", "effect_traits",
                            "evaluate", "report"]
                           + [model.job for model in MODELS.values()] + [kind.job for kind in MAP_KINDS.values()]):
    JOBS.register(_name, f"traitpipe.jobs.{_name}:main")
