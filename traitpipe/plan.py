"""What a run builds, as plain data: the map products, the shards, and every table file the run makes.

The workflow (``workflow/rules/common.smk``) builds one :class:`Plan` from the validated config and the shards
when it is parsed, and its rules and final targets read it; unit tests read the same object, so a product whose
tables the evaluation or the report would miss shows in a test, not in a run.

Examples
--------
>>> from traitpipe.config import validate_config
>>> config = validate_config({"collection": {"root": "c", "manifest": "m.csv"}, "results": "r",
...                           "explain": {"methods": [{"name": "gradcam"}]}})
>>> p = Plan.make(config, {"00000": ["A a"]})
>>> p.mapped, p.cams
(['gradcam', 'promptcam'], ['gradcam'])
>>> p.evaluation_files()[:2]
['r/tables/evaluation/stage=classifier/part-classifier.parquet', 'r/tables/evaluation/stage=prompt_cam/part-prompt_cam.parquet']
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pandas as pd

from traitpipe.collection.shards import auto_shard_size
from traitpipe.products import MAP_KINDS, MODELS, MapKind, Model, intervened_models
from traitpipe.store.tables import table_path


@dataclass(frozen=True)
class Product:
    """One map product of a run: its name (``gradcam``, ``clip-species-gradcam``), the key of its kind in
    :data:`traitpipe.products.MAP_KINDS`, and the wildcards that name it in its kind's rule."""

    name: str
    kind: str
    wildcards: dict[str, str]


@dataclass(frozen=True)
class Plan:
    """The products and files of one run.

    Attributes
    ----------
    results : str
        The results folder.
    shards : list of str
        The shards, in order.
    species_of_shard : dict of str to list of str
        Each shard's species, sorted.
    products : list of Product
        Every map product the config turns on, in the order of :data:`~traitpipe.products.MAP_KINDS`: the
        classifier's CAM methods, Prompt-CAM (``promptcam``), INTR (``intr``), ``clip-<prompt set>-<CAM method>``.
    models : list of str
        The models the products explain, and those these build on, in the order of
        :data:`~traitpipe.products.MODELS`.
    truth : dict of str to bool
        Whether the manifest names ``parts_truth`` and ``trait_truth`` masks.
    flags : dict of str to bool
        ``score_parts`` (SST against true parts), ``trained_sam2`` (a SAM 2 trained here), ``score_maps`` (maps
        against the true trait), ``retrieval``, ``score_finetune`` (SST before and after fine-tuning),
        ``summarize``, ``evaluate``, ``interventions`` (each part of each image removed, per model the maps
        explain) and the steps that are on: ``segment``, ``explain``, ``phylo``, ``report``.
    intervened : dict of str to str
        Each map product -> the model whose part interventions its maps are scored against (empty when
        interventions are off).
    """

    results: str
    shards: list[str]
    species_of_shard: dict[str, list[str]]
    products: list[Product]
    models: list[str]
    truth: dict[str, bool]
    flags: dict[str, bool]
    intervened: dict[str, str]

    @classmethod
    def make(cls, config: dict, species_of_shard: Mapping[str, Sequence[str]]) -> Plan:
        """The plan of a validated config (:func:`traitpipe.config.validate_config`) over shards (shard ->
        its species)."""
        segment = config["segment"]["enabled"]
        products = [Product(name, key, wildcards) for key, kind in MAP_KINDS.items()
                    for name, wildcards in kind.products(config)]
        needed = {model for p in products for model in MAP_KINDS[p.kind].models}
        while True:  # and what those build on
            more = needed | {n for model in needed for n in MODELS[model].needs}
            if more == needed:
                break
            needed = more
        columns = config["collection"]["columns"]
        truth = {column: columns[column] is not None for column in ("parts_truth", "trait_truth")}
        score_parts = segment and truth["parts_truth"]
        score_maps = segment and truth["trait_truth"] and bool(products)
        has_cams = any(MAP_KINDS[p.kind].table == "cams" for p in products)
        flags = {"segment": segment, "explain": config["explain"]["enabled"], "phylo": config["phylo"]["enabled"],
                 "report": config["report"]["enabled"], "score_parts": score_parts,
                 "trained_sam2": config["segment"]["checkpoint"] == "train", "score_maps": score_maps,
                 "retrieval": config["segment"]["retrieval"]["part"] is not None,
                 "score_finetune": score_parts and config["segment"]["finetune"]["enabled"],
                 "summarize": segment and config["summarize"]["enabled"],  # the parts come from SST
                 "evaluate": config["evaluate"]["enabled"] and (has_cams or score_parts or score_maps),
                 "interventions": segment and config["interventions"]["enabled"] and bool(products)}
        return cls(config["results"], list(species_of_shard),
                   {shard: sorted(species) for shard, species in species_of_shard.items()}, products,
                   [name for name in MODELS if name in needed], truth, flags,
                   intervened_models(config) if flags["interventions"] else {})

    @property
    def mapped(self) -> list[str]:
        """Every map product, scored against the parts and the truth."""
        return [p.name for p in self.products]

    @property
    def cams(self) -> list[str]:
        """The products with a ``cams`` row per image (prediction, faithfulness)."""
        return [p.name for p in self.products if MAP_KINDS[p.kind].table == "cams"]

    def kind(self, product: str) -> MapKind:
        """The kind of one of the run's products."""
        return MAP_KINDS[next(p.kind for p in self.products if p.name == product)]

    def map_kinds(self) -> list[MapKind]:
        """The kinds of map product the run makes (one map rule each)."""
        return [MAP_KINDS[kind] for kind in dict.fromkeys(p.kind for p in self.products)]

    def trained(self) -> list[Model]:
        """The models the run trains (one train rule each)."""
        return [MODELS[name] for name in self.models]

    @property
    def effect_models(self) -> list[str]:
        """The models whose part interventions the run measures (``part_effects``'s ``model``), in product order."""
        return list(dict.fromkeys(self.intervened.values()))

    def intervention(self, model: str) -> tuple[MapKind, dict[str, str]]:
        """How the interventions job loads one of :attr:`effect_models`: the kind of the first product explaining
        it, and that product's wildcards."""
        product = next(p for p in self.products if self.intervened.get(p.name) == model)
        return MAP_KINDS[product.kind], product.wildcards

    def wildcard_values(self) -> dict[str, list[str]]:
        """Every value each wildcard of the map rules takes (the workflow's wildcard constraints)."""
        values: dict[str, list[str]] = {}
        for p in self.products:
            for name, value in p.wildcards.items():
                values.setdefault(name, [])
                if value not in values[name]:
                    values[name].append(value)
        return values

    def table(self, table: str, shard: str, partition: str | None = None) -> str:
        """Path of one table file (:func:`traitpipe.store.tables.table_path`)."""
        return str(table_path(self.results, table, shard, partition))

    @property
    def map_products(self) -> list[str]:
        """The map stores of each shard: SST's labels (``segment``) and each map product's (``cam-<product>``)."""
        return (["segment"] if self.flags["segment"] else []) + [f"cam-{m}" for m in self.mapped]

    def ingest_outputs(self) -> list[str]:
        """The images and failures tables of every shard."""
        return [self.table("images", s) for s in self.shards] + [self.table("failures", s, "ingest")
                                                                 for s in self.shards]

    def segment_outputs(self) -> list[str]:
        """The parts tables of every shard (none when segment is off)."""
        return [self.table("parts", s) for s in self.shards] if self.flags["segment"] else []

    def explain_outputs(self) -> list[str]:
        """The cams tables of every product with one, and Prompt-CAM's heads (none when explain is off)."""
        if not self.flags["explain"]:
            return []
        return list(dict.fromkeys(self.table(kind.table, s, kind.table_partition(p.name))
                                  for p in self.products for kind in [MAP_KINDS[p.kind]] for s in self.shards))

    def phylo_outputs(self) -> list[str]:
        """The codes of every shard and the species distances (none when phylo is off)."""
        if not self.flags["phylo"]:
            return []
        return [self.table("codes", s) for s in self.shards] + [self.table("species_distances", "all")]

    def species_traits_files(self) -> list[str]:
        """The part named for each species: by every map product's maps, then by each model's interventions."""
        maps = [self.table("species_traits", "all", m) for m in self.mapped] if self.flags["summarize"] else []
        return maps + [self.table("species_traits", "all", f"interventions-{m}") for m in self.effect_models]

    def trait_outputs(self) -> list[str]:
        """The species summaries of every map product and model interventions, the evaluation and the report."""
        outputs = self.species_traits_files()
        if self.flags["evaluate"]:
            outputs.append(self.table("evaluation", "evaluate", "evaluate"))
        if self.flags["report"]:
            outputs.append(f"{self.results}/report.html")
        return outputs

    def targets(self) -> list[str]:
        """Everything the run makes in the end (the workflow's ``all``)."""
        return (self.ingest_outputs() + self.segment_outputs() + self.explain_outputs() + self.phylo_outputs()
                + self.trait_outputs())

    def evaluation_files(self) -> list[str]:
        """Every ``evaluation`` file the run writes: training accuracies, Phylo-NN, the scores against the truth."""
        stages = list(self.models)
        stages += ["phylo_train", "phylonn"] if self.flags["phylo"] else []
        stages += ["sst_finetune"] if self.flags["score_finetune"] else []
        stages += ["evaluate"] if self.flags["evaluate"] else []
        return [self.table("evaluation", stage, stage) for stage in stages]

    def per_shard_stages(self) -> list[str]:
        """The steps that run once per shard, each writing its shard's ``failures`` file (``stage``)."""
        segment = self.flags["segment"]
        per_shard = ["ingest"] + (["segment"] if segment else []) + [f"cam-{m}" for m in self.mapped]
        per_shard += ["codes"] if self.flags["phylo"] else []
        per_shard += [f"cam_parts-{m}" for m in self.mapped] if segment else []
        per_shard += ["part_truth"] if self.flags["score_parts"] else []
        return per_shard + [f"part_effects-{m}" for m in self.effect_models]

    def failure_files(self) -> list[str]:
        """Every ``failures`` file the run writes, for the report's count."""
        once = [model.job for model in self.trained()]
        once += ["phylo_train"] if self.flags["phylo"] else []
        return ([self.table("failures", s, stage) for stage in self.per_shard_stages() for s in self.shards]
                + [self.table("failures", "all", stage) for stage in once])


def shard_size(config: dict, species: pd.Series) -> int:
    """The run's shard size: ``shard_size`` when a number; for ``auto``, the smallest multiple of 512 whose shards
    make a run of at most one job per 50 images, between 1,000 and 4,000, with the steps and products the config
    turns on (:func:`traitpipe.collection.shards.auto_shard_size`; a fetch job per shard counted when
    ``collection.fetch`` is on).

    Parameters
    ----------
    config : dict
        Validated config.
    species : pandas.Series of str
        The manifest's species column, one row per image.

    Examples
    --------
    >>> from traitpipe.config import validate_config
    >>> config = validate_config({"collection": {"root": "c", "manifest": "m.csv"}})
    >>> shard_size(config, pd.Series(["A a"] * 1000)), shard_size({**config, "shard_size": 64}, pd.Series(["A a"]))
    (512, 64)
    """
    if config["shard_size"] != "auto":
        return config["shard_size"]
    plan = Plan.make(config, {"00000": []})  # one shard: its jobs, and those of the run
    per_shard = len(plan.per_shard_stages())
    trained = len(plan.failure_files()) - per_shard
    return auto_shard_size(species.value_counts().to_dict(), per_shard + int(config["collection"]["fetch"]["enabled"]),
                           trained + len(plan.trait_outputs()))
