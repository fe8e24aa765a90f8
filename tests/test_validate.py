"""traitpipe validate on a collection salted with every bad case and every odd but good format."""

import io
import subprocess
import sys

import numpy as np
import pandas as pd
from PIL import Image

from traitpipe.store import read_table

from test_images import _declared_png


def _save(path, image, fmt, **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format=fmt, **kw)


def test_a_salted_collection_lists_each_bad_file_and_accepts_every_good_one(collection_copy, tmp_path):
    root, species = collection_copy, "Odd formats"
    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 256, (24, 32, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6
    good = {  # path -> expected (H, W) after EXIF orientation
        "odd/grey16.tif": (Image.fromarray(np.arange(768, dtype=np.uint16).reshape(24, 32) * 5), "TIFF", {}),
        "odd/cmyk.jpg": (rgb.convert("CMYK"), "JPEG", {}),
        "odd/palette.png": (rgb.convert("P"), "PNG", {}),
        "odd/rgba.png": (rgb.convert("RGBA"), "PNG", {}),
        "odd/grey.png": (rgb.convert("L"), "PNG", {}),
        "odd/rotated.jpg": (rgb, "JPEG", {"exif": exif.tobytes()}),
        "odd/spécimen 标本.png": (rgb.transpose(Image.FLIP_LEFT_RIGHT), "PNG", {}),
    }
    for path, (image, fmt, kw) in good.items():
        _save(root / path, image, fmt, **kw)
    png = io.BytesIO()
    rgb.save(png, format="PNG")
    (root / "bad").mkdir()
    bad = {"bad/truncated.png": png.getvalue()[:60], "bad/empty.png": b"", "bad/notes.png": b"see the drawer",
           "bad/bomb.png": _declared_png(30_000, 30_000)}
    for path, data in bad.items():
        (root / path).write_bytes(data)
    (tmp_path / "outside.png").write_bytes(png.getvalue())
    manifest = pd.read_csv(root / "manifest.csv", keep_default_na=False)
    extra = [{"path": p, "species": species} for p in [*good, *bad, "bad/missing.png", "../outside.png"]]
    extra.append({"path": "odd/cmyk.jpg", "species": species})  # the same file listed twice
    pd.concat([manifest, pd.DataFrame(extra)]).fillna("").to_csv(root / "manifest.csv", index=False)

    done = subprocess.run([sys.executable, "-m", "traitpipe", "validate", str(root / "manifest.csv"), "--out",
                           str(tmp_path / "out")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    images, failures = read_table(tmp_path / "out", "images"), read_table(tmp_path / "out", "failures")
    assert set(good) <= set(images["path"]) and len(images) == len(manifest) + len(good)
    sizes = images.set_index("path").loc[list(good), ["height", "width"]]
    assert sizes.loc["odd/rotated.jpg"].tolist() == [32, 24]  # EXIF orientation applied
    assert (sizes.drop("odd/rotated.jpg") == [24, 32]).all().all()
    reasons = dict(zip(failures["path"], failures["reason"]))
    assert reasons["bad/truncated.png"].startswith("cannot decode")
    assert reasons["bad/empty.png"] == "empty file (0 bytes)"
    assert reasons["bad/notes.png"] == "not an image Pillow can identify"
    assert reasons["bad/bomb.png"].startswith("too large: 30000x30000")
    assert reasons["bad/missing.png"].startswith("missing file")
    assert reasons["../outside.png"].startswith("outside the collection root")
    assert reasons["odd/cmyk.jpg"].startswith("duplicate of manifest row")
    assert len(failures) == 7
    out = done.stdout
    assert f"{len(images)} usable images, 7 failures" in out and f"       {len(good)}  {species}" in out
    assert "failed: 1 x duplicate of manifest row" in out and "failed: 1 x missing file" in out
    assert f"1 species without a reference mask (SST skips them): {species}" in out


def test_an_unusable_manifest_or_no_usable_image_exits_non_zero_with_the_reason(tmp_path):
    (tmp_path / "m.csv").write_text("file,taxon\na.png,X y\n")
    done = subprocess.run([sys.executable, "-m", "traitpipe", "validate", str(tmp_path / "m.csv")], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "path" in done.stderr and not (tmp_path / "results").exists()
    (tmp_path / "m.csv").write_text("path,species\na.png,X y\n")
    done = subprocess.run([sys.executable, "-m", "traitpipe", "validate", str(tmp_path / "m.csv")], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "no usable image" in done.stderr and "failed: 1 x missing file" in done.stdout
