"""The models a run trains and the map products it makes, each declared once.

A :class:`Model` is trained (or resolved from a checkpoint) once per run, from every shard's images, by its
train job; a :class:`MapKind` makes one map store per shard and product with its map job, explaining one or more
models. The workflow makes one train rule per model and one map rule per kind from these entries
(``workflow/rules/explain.smk``); :class:`traitpipe.plan.Plan` names their files; the report draws each product's
panels by its ``panel``. A new map-producing method is its compute module, its two jobs, its config section and
one entry in each registry here.

Examples
--------
>>> MAP_KINDS["intr"].products({"explain": {"enabled": True}, "intr": {"enabled": True}})
[('intr', {})]
>>> MODELS["prompt_cam"].needs
('classifier',)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from traitpipe.registry import Registry


def _section(name: str) -> Callable[[dict], dict]:
    """The settings of a model or product that reads one config section (and the device)."""
    return lambda config, **_: {name: config[name], "device": config["device"]}


@dataclass(frozen=True)
class Model:
    """A model trained (or resolved) once per run: ``models/<name>.pt`` and its description ``<name>.json``.

    Attributes
    ----------
    name : str
        The files' stem and its ``evaluation`` stage (training accuracies).
    job : str
        Its train job: also the rule, the log and the ``failures`` stage.
    section : str
        The config section it is configured by.
    needs : tuple of str
        Models it builds on (handed to its job as ``--<name>`` and ``--<name>-description``).
    files : dict of str to (str, str)
        Files the config names that the job reads: an input name -> (a dotted key of ``section``, ``local`` for a
        file or folder anywhere, ``collection`` for a file under the collection root). A changed file reruns
        the job.
    options : tuple of str
        Those of ``files`` the job is handed as ``--<name>`` (the others it finds through the config).
    settings : callable
        config -> what the model depends on (a changed value reruns its job).
    """

    name: str
    job: str
    section: str
    needs: tuple[str, ...] = ()
    files: dict[str, tuple[str, str]] = field(default_factory=lambda: {"checkpoint": ("checkpoint", "local"),
                                                                       "classes": ("classes", "collection")})
    options: tuple[str, ...] = ()
    settings: Callable[[dict], dict] | None = None

    def depends_on(self, config: dict) -> dict:
        """The config values the model depends on."""
        return (self.settings or _section(self.section))(config)

    def file_settings(self, config: dict) -> dict[str, tuple[object, str]]:
        """Each of :attr:`files`: (the config's value, its kind)."""
        found = {}
        for name, (key, kind) in self.files.items():
            value = config[self.section]
            for part in key.split("."):
                value = value[part]
            found[name] = (value, kind)
        return found


@dataclass(frozen=True)
class MapKind:
    """A kind of map product: one map store (``cam-<product>``), one table and one failures file per shard.

    Attributes
    ----------
    rule : str
        Its rule (and the key of ``threads`` and of the slurm profile).
    job : str
        Its per-shard job.
    product : str
        The product's name, a pattern whose ``{wildcards}`` :meth:`products` fills.
    models : tuple of str
        The models it explains, the first handed as ``--weights`` / ``--description``, the others as
        ``--<name>`` / ``--<name>-description``.
    table : str
        Its per-shard table: ``cams`` (partitioned by product; one row per image: prediction, faithfulness) or
        ``prompt_heads`` (Prompt-CAM's ranked heads).
    table_option : str
        The job's option for that table.
    options : tuple of (str, str)
        The job's other options: (option, the wildcard that gives its value).
    panel : str
        How the report draws a specimen's maps: ``alphas`` (one per comparison strength), ``ranked_heads`` (the
        top-ranked heads) or ``heads`` (the first heads).
    products : callable
        config -> [(product name, wildcards)] the config turns on.
    settings : callable
        (config, **wildcards) -> what one product's map job depends on.
    intervened : str
        The name of the model its maps explain, a pattern :meth:`products`' wildcards fill: that model's part
        interventions (``part_effects``) are what its maps are scored against. The first of :attr:`models` is
        how the interventions job loads it.
    """

    rule: str
    job: str
    product: str
    models: tuple[str, ...]
    table: str
    table_option: str
    panel: str
    products: Callable[[dict], list[tuple[str, dict]]]
    settings: Callable[..., dict]
    intervened: str
    options: tuple[tuple[str, str], ...] = ()

    def table_partition(self, product: str) -> str | None:
        """The partition of its table file: the product for ``cams``, none for ``prompt_heads``."""
        return product if self.table == "cams" else None


def _cam_products(config: dict) -> list[tuple[str, dict]]:
    return [(m["name"], {"method": m["name"]}) for m in config["explain"]["methods"]] if config["explain"][
        "enabled"] else []


def clip_prompt_sets(config: dict) -> list[str]:
    """The CLIP prompt sets (``species``, ``concept``) the config gives prompts for, when CLIP maps are on."""
    prompts = config["clip"]["prompts"]
    on = config["explain"]["enabled"] and config["clip"]["enabled"]
    return [name for name, given in (("species", prompts["species"] is not None),
                                     ("concept", prompts["concepts"] is not None)) if given and on]


def _clip_products(config: dict) -> list[tuple[str, dict]]:
    return [(f"clip-{prompts}-{m['name']}", {"prompts": prompts, "clip_method": m["name"]})
            for prompts in clip_prompt_sets(config) for m in config["clip"]["methods"]]


def _one(name: str, section: str) -> Callable[[dict], list[tuple[str, dict]]]:
    """The products of a kind with one product, on when explain and its section are."""
    return lambda config: [(name, {})] if config["explain"]["enabled"] and config[section]["enabled"] else []


def _cam_settings(section: str, wildcard: str) -> Callable[..., dict]:
    """A CAM method's map job depends on explain (and ``section``'s) settings but its methods, its own method, the
    device."""
    def settings(config: dict, **wildcards) -> dict:
        sections = ["explain"] + ([section] if section != "explain" else [])
        chosen = {name: {k: v for k, v in config[name].items() if k != "methods"} for name in sections}
        method = next(m for m in config[section]["methods"] if m["name"] == wildcards[wildcard])
        return {**chosen, "method": method, "device": config["device"]}
    return settings


def _intr_settings(config: dict, **_) -> dict:
    """INTR's map job: its section, the explained class, the faithfulness mask, the device."""
    return {"intr": config["intr"], "device": config["device"],
            **{k: config["explain"][k] for k in ("target", "faithfulness_fraction")}}


def _clip_model_settings(config: dict) -> dict:
    """The CLIP model: its model, prompts and training (not the CAM methods and their batch size, which the map
    jobs read), the taxonomy ranks its species prompts are built from, the device."""
    clip = {k: v for k, v in config["clip"].items() if k not in ("methods", "batch_size")}
    return {"clip": clip, "ranks": config["collection"]["columns"]["ranks"], "device": config["device"]}


def intervened_models(config: dict) -> dict[str, str]:
    """Every map product a validated config turns on -> the model whose part interventions its maps are scored
    against (``part_effects``'s ``model``).

    Examples
    --------
    >>> config = {"explain": {"enabled": True, "methods": [{"name": "gradcam"}]}, "prompt_cam": {"enabled": False},
    ...           "intr": {"enabled": False}, "occlusion": {"enabled": True},
    ...           "clip": {"enabled": True, "prompts": {"species": "taxonomic", "concepts": None},
    ...                    "methods": [{"name": "gradcam"}]}}
    >>> intervened_models(config)
    {'gradcam': 'classifier', 'occlusion': 'classifier', 'clip-species-gradcam': 'clip-species'}
    """
    return {name: kind.intervened.format(**wildcards) for kind in MAP_KINDS.values()
            for name, wildcards in kind.products(config)}


def map_products(config: dict) -> dict[str, str]:
    """Every map product a validated config turns on (name -> the key of its kind in :data:`MAP_KINDS`), in
    order: the classifier's CAM methods, Prompt-CAM, INTR, the CLIP's products."""
    return {name: key for key, kind in MAP_KINDS.items() for name, _ in kind.products(config)}


#: The models a run can train, in the order their files are listed.
MODELS = Registry("model")
MODELS.register("classifier", Model("classifier", job="classifier", section="classifier"))
MODELS.register("prompt_cam", Model("prompt_cam", job="prompt_cam_train", section="prompt_cam", needs=("classifier",)))
MODELS.register("intr", Model("intr", job="intr_train", section="intr"))
MODELS.register("clip", Model("clip", job="clip_model", section="clip", settings=_clip_model_settings,
                              files={"checkpoint": ("checkpoint", "local"), "model": ("model", "local"),
                                     "concepts": ("prompts.concepts", "collection"),
                                     "common_names": ("prompts.common_names", "collection")},
                              options=("concepts", "common_names")))

#: The kinds of map product, in the order their products are listed.
MAP_KINDS = Registry("map product kind")
MAP_KINDS.register("explain", MapKind(
    "explain", job="explain", product="{method}", models=("classifier",), table="cams", table_option="cams",
    panel="alphas", products=_cam_products, settings=_cam_settings("explain", "method"), intervened="classifier",
    options=(("method", "method"),)))
MAP_KINDS.register("prompt_cam", MapKind(
    "prompt_cam", job="prompt_cam", product="promptcam", models=("prompt_cam", "classifier"), table="prompt_heads",
    table_option="heads", panel="ranked_heads", products=_one("promptcam", "prompt_cam"),
    settings=_section("prompt_cam"), intervened="prompt_cam"))
MAP_KINDS.register("intr", MapKind(
    "intr", job="intr", product="intr", models=("intr",), table="cams", table_option="cams", panel="heads",
    products=_one("intr", "intr"), settings=_intr_settings, intervened="intr"))
MAP_KINDS.register("occlusion", MapKind(
    "occlusion", job="occlusion", product="occlusion", models=("classifier",), table="cams", table_option="cams",
    panel="alphas", products=_one("occlusion", "occlusion"), intervened="classifier",
    settings=lambda config, **_: {"occlusion": config["occlusion"], "device": config["device"],
                                  **{k: config["explain"][k] for k in ("target", "faithfulness_fraction")}}))
MAP_KINDS.register("clip", MapKind(
    "clip", job="explain", product="clip-{prompts}-{clip_method}", models=("clip",), table="cams",
    table_option="cams", panel="alphas", products=_clip_products, settings=_cam_settings("clip", "clip_method"),
    intervened="clip-{prompts}", options=(("method", "clip_method"), ("prompts", "prompts"))))
