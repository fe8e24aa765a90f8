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

from traitpipe.store.tables import table_path


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
    cam_methods : list of str
        The classifier's CAM methods (``explain.methods``; none when explain is off).
    clip_sets : list of str
        The CLIP prompt sets (``species``, ``concept``) with prompts, when CLIP is on.
    clip_products : list of str
        ``clip-<set>-<CAM method>`` per prompt set and CLIP CAM method.
    mapped : list of str
        Every map product scored against the parts and the truth: the CAM methods, Prompt-CAM (``promptcam``),
        INTR (``intr``) and the CLIP products.
    cams : list of str
        The products with a ``cams`` row per image (prediction, faithfulness): the CAM methods, INTR, CLIP's.
    truth : dict of str to bool
        Whether the manifest names ``parts_truth`` and ``trait_truth`` masks.
    flags : dict of str to bool
        ``score_parts`` (SST against true parts), ``trained_sam2`` (a SAM 2 trained here), ``score_maps`` (maps
        against the true trait), ``retrieval``, ``score_finetune`` (SST before and after fine-tuning),
        ``summarize``, ``evaluate`` and the steps that are on: ``segment``, ``explain``, ``phylo``, ``report``.
    """

    results: str
    shards: list[str]
    species_of_shard: dict[str, list[str]]
    cam_methods: list[str]
    clip_sets: list[str]
    clip_products: list[str]
    mapped: list[str]
    cams: list[str]
    truth: dict[str, bool]
    flags: dict[str, bool]

    @classmethod
    def make(cls, config: dict, species_of_shard: Mapping[str, Sequence[str]]) -> Plan:
        """The plan of a validated config (:func:`traitpipe.config.validate_config`) over shards (shard ->
        its species)."""
        explain, segment = config["explain"]["enabled"], config["segment"]["enabled"]
        cam_methods = [m["name"] for m in config["explain"]["methods"]] if explain else []
        prompts = config["clip"]["prompts"]
        clip_sets = [name for name, given in (("species", prompts["species"] is not None),
                                              ("concept", prompts["concepts"] is not None))
                     if given and explain and config["clip"]["enabled"]]
        clip_products = [f"clip-{name}-{m['name']}" for name in clip_sets for m in config["clip"]["methods"]]
        mapped = cam_methods + [name for name, section in (("promptcam", "prompt_cam"), ("intr", "intr"))
                                if explain and config[section]["enabled"]] + clip_products
        cams = cam_methods + (["intr"] if "intr" in mapped else []) + clip_products
        columns = config["collection"]["columns"]
        truth = {column: columns[column] is not None for column in ("parts_truth", "trait_truth")}
        score_parts = segment and truth["parts_truth"]
        score_maps = segment and truth["trait_truth"] and bool(mapped)
        flags = {"segment": segment, "explain": explain, "phylo": config["phylo"]["enabled"],
                 "report": config["report"]["enabled"], "score_parts": score_parts,
                 "trained_sam2": config["segment"]["checkpoint"] == "train", "score_maps": score_maps,
                 "retrieval": config["segment"]["retrieval"]["part"] is not None,
                 "score_finetune": score_parts and config["segment"]["finetune"]["enabled"],
                 "summarize": segment and config["summarize"]["enabled"],  # the parts come from SST
                 "evaluate": config["evaluate"]["enabled"] and bool(cams or score_parts or score_maps)}
        return cls(config["results"], list(species_of_shard),
                   {shard: sorted(species) for shard, species in species_of_shard.items()}, cam_methods, clip_sets,
                   clip_products, mapped, cams, truth, flags)

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
        prompt = [self.table("prompt_heads", s) for s in self.shards] if "promptcam" in self.mapped else []
        return [self.table("cams", s, m) for m in self.cams for s in self.shards] + prompt

    def phylo_outputs(self) -> list[str]:
        """The codes of every shard and the species distances (none when phylo is off)."""
        if not self.flags["phylo"]:
            return []
        return [self.table("codes", s) for s in self.shards] + [self.table("species_distances", "all")]

    def trait_outputs(self) -> list[str]:
        """The species summaries of every map product, the evaluation and the report."""
        outputs = [self.table("species_traits", "all", m) for m in self.mapped] if self.flags["summarize"] else []
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
        stages = (["classifier"] if self.cam_methods else []) + (["prompt_cam"] if "promptcam" in self.mapped
                                                                 else [])
        stages += (["intr"] if "intr" in self.mapped else []) + (["clip"] if self.clip_sets else [])
        stages += ["phylo_train", "phylonn"] if self.flags["phylo"] else []
        stages += ["sst_finetune"] if self.flags["score_finetune"] else []
        stages += ["evaluate"] if self.flags["evaluate"] else []
        return [self.table("evaluation", stage, stage) for stage in stages]

    def failure_files(self) -> list[str]:
        """Every ``failures`` file the run writes, for the report's count."""
        segment = self.flags["segment"]
        per_shard = ["ingest"] + (["segment"] if segment else []) + [f"cam-{m}" for m in self.mapped]
        per_shard += ["codes"] if self.flags["phylo"] else []
        per_shard += [f"cam_parts-{m}" for m in self.mapped] if segment else []
        per_shard += ["part_truth"] if self.flags["score_parts"] else []
        once = (["classifier"] if self.cam_methods else []) + (["prompt_cam_train"] if "promptcam" in self.mapped
                                                               else [])
        once += (["intr_train"] if "intr" in self.mapped else []) + (["clip_model"] if self.clip_sets else [])
        once += ["phylo_train"] if self.flags["phylo"] else []
        return ([self.table("failures", s, stage) for stage in per_shard for s in self.shards]
                + [self.table("failures", "all", stage) for stage in once])
