"""The seam between rules and jobs: rules own every path, jobs derive none."""

import re
from pathlib import Path

JOBS = Path(__file__).resolve().parents[1] / "traitpipe" / "jobs"


def test_no_job_derives_a_path():
    """A job writes and reads only the files its rule hands over: no results folder, no naming scheme."""
    offending = {}
    for file in sorted(JOBS.glob("*.py")):
        hits = re.findall(r'config\["results"\]|\btable_path\(|\bmap_path\(|collection_file\(|load_manifest\(',
                          file.read_text())
        if hits:
            offending[file.name] = sorted(set(hits))
    assert offending == {}


def test_every_cam_method_in_the_registry_is_accepted_by_the_config_schema():
    """The registry (traitpipe.explain.cam.METHODS) is the list; the schema's enum must name exactly it."""
    from traitpipe.config import schema
    from traitpipe.explain.cam import METHODS

    enum = schema()["properties"]["explain"]["properties"]["methods"]["items"]["properties"]["name"]["enum"]
    assert sorted(enum) == sorted(METHODS)


def test_steps_do_not_import_each_other():
    """A step is read, call, write: what steps share lives in jobs.images, jobs.masks, jobs.models, jobs.splits,
    jobs.step or the library."""
    shared = {"devices", "images", "map_pass", "masks", "models", "splits", "step", "__init__"}
    imports = {}
    for file in sorted(JOBS.glob("*.py")):
        steps = set(re.findall(r"from traitpipe\.jobs\.(\w+) import", file.read_text())) - shared
        if steps:
            imports[file.name] = sorted(steps)
    assert imports == {}


def test_every_segmentation_backend_is_accepted_by_the_config_schema():
    from traitpipe.config import schema
    from traitpipe.segment.backends import BACKENDS

    assert sorted(schema()["properties"]["segment"]["properties"]["backend"]["enum"]) == sorted(BACKENDS)


def test_every_job_uses_the_step_skeleton_and_schema_columns():
    """Each step parses, reads the config, picks the device and writes through jobs.step.Step; no job lists
    a table's columns (they come from store/schemas.py)."""
    for file in sorted(JOBS.glob("*.py")):
        if file.stem in {"devices", "images", "map_pass", "masks", "models", "splits", "step", "__init__"}:
            continue
        text = file.read_text()
        assert "Step(" in text and "write_table(" not in text and "provenance(" not in text, file.name
        assert not re.search(r"_COLUMNS = \[|columns=\[", text), file.name


def test_load_segmenter_builds_the_backend_a_registry_line_names(monkeypatch):
    """A new backend is a module (here a class in this test) and a registry line; load_segmenter builds it."""
    import numpy as np

    from traitpipe.segment import backends
    from traitpipe.segment.sst import Frame

    class Copy:
        def __init__(self, settings, device, tuned, trained):
            self.description, self.precision = {"random_weights": False}, "float32"

        def segment(self, support, labels, queries):
            maps = [labels] + [labels[:q.shape[0], :q.shape[1]] for q in queries]
            return (Frame(i, m, (m == 1)[None], (1,), 0) for i, m in enumerate(maps))

    monkeypatch.setitem(backends.BACKENDS, "copy", f"{__name__}:Copy")
    monkeypatch.setattr(__import__(__name__), "Copy", Copy, raising=False)
    segmenter = backends.load_segmenter({"backend": "copy"}, "cpu")
    labels = np.ones((4, 4), np.uint8)
    frames = list(segmenter.segment(np.zeros((4, 4, 3), np.uint8), labels, [np.zeros((2, 3, 3), np.uint8)]))
    assert frames[1].labels.shape == (2, 3) and [f.chunk for f in frames] == [0, 0]


def test_every_file_contributing_names_exists():
    """CONTRIBUTING's recipes name files: a module renamed or moved without the recipe fails here."""
    root = JOBS.parents[1]
    named = set(re.findall(r"`((?:traitpipe|tests|workflow|docs|config|scripts)/[\w/.]+\.(?:py|smk|yaml|md))`",
                           (root / "CONTRIBUTING.md").read_text()))
    assert len(named) > 20 and sorted(p for p in named if not (root / p).is_file()) == []
