"""What the workflow's rules hand their jobs: the files a config value names (inputs of a rule, so that editing
one reruns what read it) and the command-line options that carry paths. Pure functions of their arguments; the
workflow (``workflow/rules/common.smk``) calls them with its config and plan.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path


def optional(path) -> list[str]:
    """[path] for a file the config names, [] for none.

    >>> optional(None), optional(Path("tree.nwk"))
    ([], ['tree.nwk'])
    """
    return [] if path is None else [str(path)]


def local_files(value) -> list[str]:
    """The files of a config value naming a local checkpoint: [value] for a file, every file of a folder (the
    Hub's layout), [] for anything else (a named source, null).

    >>> local_files(None), local_files("timm"), local_files("hf-hub:imageomics/bioclip")
    ([], [], [])
    """
    if not isinstance(value, str) or not Path(value).exists():
        return []
    path = Path(value)
    return [value] if path.is_file() else sorted(str(p) for p in path.iterdir() if p.is_file())


def collection_files(value, root: str) -> list[str]:
    """[file] for a config value naming a file under the collection ``root`` (a class list), else [] (a list
    given inline, null).

    >>> collection_files("classes.txt", "/data"), collection_files(["A a"], "/data")
    (['/data/classes.txt'], [])
    """
    if not isinstance(value, str):
        return []
    return [str(Path(value) if Path(value).is_absolute() else Path(root) / value)]


def option(flag: str, files) -> str:
    """'--flag FILE' for each file a rule hands its job ('' when it has none), quoted for the shell.

    >>> option("phylogeny", ["my tree.nwk"]), option("heads", [])
    ("--phylogeny 'my tree.nwk'", '')
    """
    files = [files] if isinstance(files, str) else list(files)
    return " ".join(f"--{flag} {shlex.quote(str(f))}" for f in files)


def model_options(names: Sequence[str], files: Sequence[str], first: str | None = None) -> str:
    """'--<name> WEIGHTS --<name>-description CARD' for models ``names`` whose files are ``files`` (each model's
    weights, then its card); the first model as '--<first> ... --description ...' when ``first`` is given.

    >>> model_options(["prompt_cam", "classifier"], ["p.pt", "p.json", "c.pt", "c.json"], first="weights")
    '--weights p.pt --description p.json --classifier c.pt --classifier-description c.json'
    """
    files, options = list(files), []
    for k, name in enumerate(names):
        flag, described = (first, "description") if (first and k == 0) else (name, f"{name}-description")
        options += [f"--{flag} {shlex.quote(files[2 * k])}", f"--{described} {shlex.quote(files[2 * k + 1])}"]
    return " ".join(options)


def reference_options(references: Mapping[str, Sequence[str]], species: Sequence[str]) -> str:
    """'--reference SPECIES IMAGE MASK' for each of these species that has a reference (image, mask).

    >>> reference_options({"A a": ("a.png", "a_mask.png")}, ["A a", "B b"])
    "--reference 'A a' a.png a_mask.png"
    """
    return " ".join(f"--reference {shlex.quote(name)} {shlex.quote(references[name][0])} "
                    f"{shlex.quote(references[name][1])}" for name in species if name in references)


def store(marker: str) -> str:
    """The Zarr store of a declared ``zarr.json`` (rules declare that file, the job gets the store).

    >>> store("results/maps/segment/shard-00000.zarr/zarr.json")
    'results/maps/segment/shard-00000.zarr'
    """
    return str(Path(marker).parent)
