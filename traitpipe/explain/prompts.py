"""Text prompts for CLIP-like models: one per species from its taxonomy (BioCLIP's text types), or trait concepts.

BioCLIP was trained on five text types built from a specimen's taxonomy; zero-shot it
reads best with ``"a photo of " + text``:

=========================  ===========================================================
form                       text (for *Danaus plexippus*, Nymphalidae, "monarch")
=========================  ===========================================================
``taxonomic``              ``Nymphalidae Danaus plexippus`` (every rank given, then the species)
``scientific``             ``Danaus plexippus``
``common``                 ``monarch``
``taxonomic_and_common``   ``Nymphalidae Danaus plexippus with common name monarch``
``scientific_and_common``  ``Danaus plexippus with common name monarch``
=========================  ===========================================================

A prompt set is ``{"texts": [...], "labels": [...]}``: the prompts (the classes of the
CLIP classifier) and, per prompt, the species it stands for (None for a concept several
species or none carry), with ``species_prompt``: each species' own prompt index or None.
"""

from __future__ import annotations

FORMS = ("taxonomic", "scientific", "common", "taxonomic_and_common", "scientific_and_common")


def taxon_text(species: str, ranks: list[str], form: str, common: str | None = None) -> str:
    """One species' text of a BioCLIP form.

    Parameters
    ----------
    species : str
        The species name (a binomial).
    ranks : list of str
        Its higher ranks, highest first (e.g. family, genus); a genus that the binomial
        starts with is not repeated.
    form : str
        One of :data:`FORMS`.
    common : str or None
        Its common name (the common forms need one).

    Examples
    --------
    >>> taxon_text("Danaus plexippus", ["Nymphalidae", "Danaus"], "taxonomic")
    'Nymphalidae Danaus plexippus'
    >>> taxon_text("Danaus plexippus", [], "scientific_and_common", "monarch")
    'Danaus plexippus with common name monarch'
    """
    if form not in FORMS:
        raise ValueError(f"unknown prompt form {form!r}; forms: {', '.join(FORMS)}")
    if "common" in form and not common:
        raise ValueError(f"the {form} prompt form needs a common name for {species!r} (clip.prompts.common_names)")
    higher = [rank for rank in ranks if rank and rank != species.split(" ")[0]]
    names = {"taxonomic": " ".join([*higher, species]), "scientific": species, "common": common}
    base = names[form.split("_and_")[0]]
    return f"{base} with common name {common}" if form.endswith("_and_common") else base


def species_prompts(taxa: dict[str, list[str]], form: str, template: str,
                    common_names: dict[str, str] | None = None) -> dict:
    """The species prompt set: one prompt per species, in the order of ``taxa``.

    Parameters
    ----------
    taxa : dict
        Species -> its higher ranks, highest first.
    form : str
        A BioCLIP text type (:data:`FORMS`).
    template : str
        With one ``{}`` for the text, e.g. ``"a photo of {}."``.
    common_names : dict or None

    Examples
    --------
    >>> species_prompts({"Mily alba": ["Phaidae", "Mily"]}, "taxonomic", "a photo of {}.")["texts"]
    ['a photo of Phaidae Mily alba.']
    """
    names = common_names or {}
    texts = [template.format(taxon_text(name, ranks, form, names.get(name))) for name, ranks in taxa.items()]
    return {"texts": texts, "labels": list(taxa), "species_prompt": {name: i for i, name in enumerate(taxa)}}


def concept_prompts(concepts: list[str] | dict[str, str], species: list[str]) -> dict:
    """The concept prompt set: trait concepts, as a list or as the concept each species carries.

    A list: the prompts are the concepts, and each image's map explains the concept the model
    finds most similar to it. A mapping ``species -> concept``: the prompts are its distinct
    concepts, and each image's map explains its species' concept. A concept that exactly one
    species carries stands for that species (its ``labels`` entry).

    Examples
    --------
    >>> s = concept_prompts({"a": "a red spot", "b": "a blue spot", "c": "a red spot"}, ["a", "b", "c"])
    >>> s["texts"], s["labels"], s["species_prompt"]
    (['a red spot', 'a blue spot'], [None, 'b'], {'a': 0, 'b': 1, 'c': 0})
    """
    if isinstance(concepts, dict):
        missing = sorted(set(species) - set(concepts))
        if missing:
            raise ValueError(f"clip.prompts.concepts names no concept for {len(missing)} species: "
                             f"{', '.join(missing[:5])}")
        texts = list(dict.fromkeys(concepts[name] for name in species))
        carriers = {text: [name for name in species if concepts[name] == text] for text in texts}
        labels = [names[0] if len(names) == 1 else None for names in carriers.values()]
        own = {name: texts.index(concepts[name]) for name in species}
        return {"texts": texts, "labels": labels, "species_prompt": own}
    return {"texts": list(concepts), "labels": [None] * len(concepts), "species_prompt": {}}


def prompt_sets(settings: dict, taxa: dict[str, list[str]], common_names: dict | None, concepts) -> dict[str, dict]:
    """The run's prompt sets: ``species`` (one prompt per species) and ``concept``, those the config asks for.

    ``settings`` is the config's ``clip.prompts`` (``species``: a form or None, ``template``); ``concepts`` its
    concepts (a list, a mapping, or None)."""
    sets = {}
    if settings["species"] is not None:
        sets["species"] = species_prompts(taxa, settings["species"], settings["template"], common_names)
    if concepts is not None:
        sets["concept"] = concept_prompts(concepts, list(taxa))
    return sets


def captions(taxa: dict[str, list[str]], template: str, common_names: dict | None, sets: dict) -> list[list[str]]:
    """Per species, every text true of its images that training pairs them with: its name in each BioCLIP form the
    collection can fill (BioCLIP trains on them mixed) and its concept."""
    forms = [form for form in FORMS if "common" not in form or common_names]
    per_species = []
    for name, ranks in taxa.items():
        texts = [template.format(taxon_text(name, ranks, form, (common_names or {}).get(name))) for form in forms]
        if "concept" in sets and name in sets["concept"]["species_prompt"]:
            texts.append(sets["concept"]["texts"][sets["concept"]["species_prompt"][name]])
        per_species.append(list(dict.fromkeys(texts)))
    return per_species
