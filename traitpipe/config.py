"""The run config: one YAML file, checked against a JSON schema with defaults.

:func:`load_config` fills defaults and stops with a :class:`ConfigError` that
names the key, the bad value and what is allowed, before any work starts.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
from importlib import resources
from pathlib import Path

import jsonschema
import yaml


class ConfigError(ValueError):
    """A config that cannot run; the message names the key and the fix."""


def schema() -> dict:
    """The config schema (``traitpipe/config.schema.yaml``) as a dict."""
    return yaml.safe_load(resources.files("traitpipe").joinpath("config.schema.yaml").read_text())


def _with_defaults(validator_class):
    """A validator class that fills ``default`` values while it validates."""
    check_properties = validator_class.VALIDATORS["properties"]

    def properties(validator, props, instance, sub_schema):
        if isinstance(instance, dict):
            for name, prop in props.items():
                if "default" in prop:
                    instance.setdefault(name, copy.deepcopy(prop["default"]))
        yield from check_properties(validator, props, instance, sub_schema)

    return jsonschema.validators.extend(validator_class, {"properties": properties})


_Validator = _with_defaults(jsonschema.Draft202012Validator)


def _message(error: jsonschema.ValidationError) -> str:
    key = ".".join(str(p) for p in error.absolute_path) or "(top level)"
    rule = error.validator
    if rule == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        unknown = sorted(set(error.instance) - set(allowed))
        hints = [f"{u!r} (did you mean {m[0]!r}?)" if (m := difflib.get_close_matches(u, allowed, n=1))
                 else repr(u) for u in unknown]
        return f"config: unknown key(s) {', '.join(hints)} under {key}; allowed keys: {', '.join(allowed)}"
    if rule == "required":
        missing = error.message.split("'")[1]
        where = f"{key}.{missing}" if error.absolute_path else missing
        return f"config: missing key {where}"
    return f"config key {key}: {error.instance!r} is not allowed; expected {_expected(rule, error.schema, error)}"


def _expected(rule: str, schema: dict, error: jsonschema.ValidationError) -> str:
    """What a schema rule allows, in words (each alternative of an ``anyOf``)."""
    if rule == "anyOf":
        return " or ".join(_expected(next(r for r in ("const", "minimum", "type", "pattern", "enum") if r in part),
                                     part, error) for part in schema["anyOf"])
    return {
        "type": lambda s: f"a value of type {s['type']}",
        "pattern": lambda s: f"a string matching {s['pattern']}",
        "enum": lambda s: "one of " + ", ".join(map(repr, s["enum"])),
        "const": lambda s: repr(s["const"]),
        "minimum": lambda s: f"a number >= {s['minimum']}",
        "maximum": lambda s: f"a number <= {s['maximum']}",
    }.get(rule, lambda s: error.message)(schema)


def canonical_json(value) -> str:
    """JSON with sorted keys and no spaces: the same value always gives the same text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def config_hash(config: dict) -> str:
    """First 16 hex digits of the sha256 of the config's canonical JSON."""
    return hashlib.sha256(canonical_json(config).encode()).hexdigest()[:16]


def validate_config(config: dict) -> dict:
    """Check a config and fill its defaults.

    Parameters
    ----------
    config : dict
        As read from YAML (or Snakemake's ``config``). Not modified.

    Returns
    -------
    dict
        A validated copy with defaults filled and ``run_id`` set (the config
        hash when not given). Validating a validated config changes nothing.

    Raises
    ------
    ConfigError
        The first problem found, naming the key, the value and what is allowed.
    """
    if not isinstance(config, dict) or not config:
        raise ConfigError("config is empty: pass a config file (see config/config.yaml and config/README.md)")
    cfg = copy.deepcopy(config)
    errors = sorted(_Validator(schema()).iter_errors(cfg), key=lambda e: list(e.absolute_path))
    if errors:
        raise ConfigError(_message(errors[0]))
    for section in ("explain", "clip"):
        names = [m["name"] for m in cfg[section]["methods"]]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ConfigError(f"config key {section}.methods: method(s) {', '.join(repeated)} appear more than "
                              "once; give each method one entry with a list of alphas")
    if cfg["segment"]["checkpoint"] == "train" and cfg["collection"]["columns"]["parts_truth"] is None:
        raise ConfigError("config key segment.checkpoint: 'train' trains SAM 2 on true part masks; set "
                          "collection.columns.parts_truth to the manifest column that holds them")
    for section in ("segment", "classifier", "prompt_cam", "intr", "clip", "phylo"):
        value = cfg[section]["checkpoint"]
        if cfg[section]["checkpoint_sha256"] and (value in (None, "train", "timm") or value.startswith("hf-hub:")):
            raise ConfigError(f"config key {section}.checkpoint_sha256: checks a local checkpoint file, and "
                              f"{section}.checkpoint is {value!r}")
    value = cfg["intr"]["checkpoint"]
    if value is not None and (value in ("train", "timm") or value.startswith("hf-hub:")):
        raise ConfigError(f"config key intr.checkpoint: a local INTR checkpoint file (the authors' checkpoint.pth "
                          f"or traitpipe's models/intr.pt), or null to train one; {value!r} is neither")
    clip = cfg["clip"]
    if clip["enabled"] and clip["prompts"]["species"] is None and clip["prompts"]["concepts"] is None:
        raise ConfigError("config key clip.prompts: neither species prompts nor concepts; give at least one")
    if clip["prompts"]["species"] and "common" in clip["prompts"]["species"] and not clip["prompts"]["common_names"]:
        raise ConfigError(f"config key clip.prompts.species: the {clip['prompts']['species']} form needs "
                          "clip.prompts.common_names (species -> common name)")
    if clip["checkpoint_sha256"] and clip["checkpoint"] and Path(clip["checkpoint"]).is_dir():
        raise ConfigError("config key clip.checkpoint_sha256: checks one weights file, and clip.checkpoint is a "
                          "folder; give the folder's files as they are (their edits rerun the CLIP step)")
    if clip["enabled"] and clip["model"] is None and (clip["checkpoint"] in (None, "train")
                                                      or Path(clip["checkpoint"]).is_file()):
        raise ConfigError(f"config key clip.model: clip.checkpoint {clip['checkpoint']!r} needs the architecture: "
                          "an open_clip name (ViT-B-16), a model-config JSON file or the config itself")
    distances = cfg["phylo"]["distances"]
    if list(distances) != sorted(set(distances)):
        raise ConfigError(f"config key phylo.distances: {distances} must increase (level k is the k-th smallest "
                          "distance from the root, the coarsest groups first, as the Phylo-NN authors sort them): "
                          f"{sorted(set(distances))}")
    if cfg["explain"]["target"] is True:  # YAML reads `target: true` as a boolean
        cfg["explain"]["target"] = "true"
    if cfg["run_id"] is None:
        cfg["run_id"] = config_hash(cfg)
    return cfg


def collection_file(config: dict, key: str) -> Path | None:
    """A ``collection`` file key (``manifest``, ``phylogeny``) resolved under ``collection.root``."""
    value = config["collection"][key]
    return None if value is None else Path(config["collection"]["root"]) / value


def load_config(path: str | Path) -> dict:
    """Read a YAML config file and validate it (see :func:`validate_config`)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:  # JSON is read as JSON: YAML 1.1 would take numbers like 1e-05 for strings
        raw = json.loads(path.read_text()) if path.suffix == ".json" else yaml.safe_load(path.read_text())
    except (yaml.YAMLError, json.JSONDecodeError) as error:
        raise ConfigError(f"config file {path} is not valid {path.suffix.lstrip('.').upper() or 'YAML'}: "
                          f"{error}") from None
    return validate_config(raw or {})
