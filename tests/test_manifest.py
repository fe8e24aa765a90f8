import pandas as pd
import pytest

from traitpipe.collection import ManifestError, read_manifest

COLUMNS = {"path": "path", "species": "species", "specimen": None, "mask": None, "ranks": []}


def _csv(tmp_path, text):
    path = tmp_path / "manifest.csv"
    path.write_text(text)
    return path


def test_reads_csv_and_parquet_with_configured_columns(tmp_path):
    frame = pd.DataFrame({"file": ["a.png", "/abs/b.png"], "taxon": ["X y", "X z"], "genus": ["X", "X"]})
    frame.to_csv(tmp_path / "m.csv", index=False)
    frame.to_parquet(tmp_path / "m.parquet")
    columns = {**COLUMNS, "path": "file", "species": "taxon", "ranks": ["genus"]}
    for name in ("m.csv", "m.parquet"):
        out = read_manifest(tmp_path / name, columns, root=tmp_path)
        assert out["species"].tolist() == ["X y", "X z"] and out["genus"].tolist() == ["X", "X"]
        assert out["file"].tolist() == [str(tmp_path / "a.png"), "/abs/b.png"]
        assert out["row"].tolist() == [1, 2] and out["mask"].tolist() == ["", ""]


def test_missing_column_names_the_key_the_columns_and_a_guess(tmp_path):
    path = _csv(tmp_path, "path,Species\na.png,X y\n")
    with pytest.raises(ManifestError) as error:
        read_manifest(path, COLUMNS, tmp_path)
    text = str(error.value)
    assert "has no column 'species' (config key collection.columns.species)" in text
    assert "its columns are 'path', 'Species'" in text and "Did you mean 'Species'?" in text


def test_unknown_species_column_in_config(tmp_path):
    path = _csv(tmp_path, "path,species\na.png,X y\n")
    with pytest.raises(ManifestError, match="no column 'scientificName' .*collection.columns.species.*species name"):
        read_manifest(path, {**COLUMNS, "species": "scientificName"}, tmp_path)
    with pytest.raises(ManifestError, match=r"no column 'order' \(config key collection.columns.ranks\[0\]\)"):
        read_manifest(path, {**COLUMNS, "ranks": ["order"]}, tmp_path)


def test_empty_manifest_and_empty_values(tmp_path):
    with pytest.raises(ManifestError, match="has no rows: add one row per image"):
        read_manifest(_csv(tmp_path, "path,species\n"), COLUMNS, tmp_path)
    with pytest.raises(ManifestError, match=r"2 row\(s\) have an empty 'species' value .*rows 2, 3"):
        read_manifest(_csv(tmp_path, "path,species\na.png,X\nb.png,\nc.png, \n"), COLUMNS, tmp_path)
    with pytest.raises(ManifestError, match="manifest not found"):
        read_manifest(tmp_path / "none.csv", COLUMNS, tmp_path)
    (tmp_path / "m.xlsx").write_text("")
    with pytest.raises(ManifestError, match="unknown format '.xlsx'"):
        read_manifest(tmp_path / "m.xlsx", COLUMNS, tmp_path)


def test_unreadable_manifests_say_which_file_which_line_and_the_fix(tmp_path):
    path = tmp_path / "manifest.csv"
    path.write_bytes("path,species\na.png,X y\nb.png,Pieris napi\n".encode() + "c.png,Méliné\n".encode("latin-1"))
    with pytest.raises(ManifestError, match=rf"manifest {path}: line 4 is not UTF-8 .*iconv -f latin1 -t utf-8"):
        read_manifest(path, COLUMNS, tmp_path)
    path.write_text("path,species\na.png,X y\nb.png,X, z\n")  # an unquoted comma inside a value
    with pytest.raises(ManifestError, match=r"cannot parse it: .*Expected 2 fields in line 3, saw 3 .*quoted"):
        read_manifest(path, COLUMNS, tmp_path)
    path.write_bytes(b"")
    with pytest.raises(ManifestError, match=r"is empty \(0 bytes\): write a header row"):
        read_manifest(path, COLUMNS, tmp_path)
    (tmp_path / "m.parquet").write_bytes(b"PAR1 not really parquet")
    with pytest.raises(ManifestError, match="not a readable Parquet file"):
        read_manifest(tmp_path / "m.parquet", COLUMNS, tmp_path)
