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
    """A step is read, call, write: what steps share lives in jobs.common, jobs.models or the library."""
    shared = {"common", "models", "__init__"}
    imports = {}
    for file in sorted(JOBS.glob("*.py")):
        steps = set(re.findall(r"from traitpipe\.jobs\.(\w+) import", file.read_text())) - shared
        if steps:
            imports[file.name] = sorted(steps)
    assert imports == {}
