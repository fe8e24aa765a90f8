import io

import numpy as np
import pytest
from PIL import Image

from traitpipe.collection.images import ImageError, image_id, read_image


def _encode(image: Image.Image, fmt="PNG", **kw) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kw)
    return buffer.getvalue()


def test_path_and_bytes_give_the_same_pixels(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8)
    data = _encode(Image.fromarray(rgb))
    (tmp_path / "a.png").write_bytes(data)
    assert np.array_equal(read_image(tmp_path / "a.png"), rgb)
    assert np.array_equal(read_image(data), rgb)
    assert image_id(data) == image_id((tmp_path / "a.png").read_bytes()) and len(image_id(data)) == 16


def test_modes_become_rgb8():
    gray16 = Image.fromarray(np.full((4, 5), 65535, np.uint16))
    assert read_image(_encode(gray16)).tolist() == np.full((4, 5, 3), 255).tolist()
    transparent = Image.new("RGBA", (3, 3), (0, 0, 0, 0))
    assert (read_image(_encode(transparent)) == 255).all()  # composited on white
    palette = Image.new("P", (3, 3), 1)
    palette.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    assert read_image(_encode(palette))[0, 0].tolist() == [10, 20, 30]
    cmyk = _encode(Image.new("CMYK", (3, 3), (0, 0, 0, 0)), "JPEG")
    assert read_image(cmyk).shape == (3, 3, 3)


def test_exif_orientation_is_applied():
    image = Image.new("RGB", (40, 20), (200, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    assert read_image(_encode(image, "JPEG", exif=exif.tobytes())).shape == (40, 20, 3)


@pytest.mark.parametrize("data, reason", [
    (b"", "empty file"),
    (b"not an image at all", "not an image"),
    (None, "cannot decode"),  # truncated PNG, filled below
])
def test_bad_bytes_are_image_errors(data, reason):
    if data is None:
        whole = _encode(Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)))
        data = whole[: len(whole) // 2]
    with pytest.raises(ImageError, match=reason):
        read_image(data)


def test_size_limit_and_float_mode(tmp_path):
    with pytest.raises(ImageError, match="too large: 100x100"):
        read_image(_encode(Image.new("RGB", (100, 100))), max_pixels=5000)
    with pytest.raises(ImageError, match="unsupported mode 'F'"):
        read_image(_encode(Image.new("F", (4, 4)), "TIFF"))
    with pytest.raises(ImageError, match="missing file"):
        read_image(tmp_path / "nope.png")
    with pytest.raises(ImageError, match="not a file but a folder"):
        read_image(tmp_path)


def test_a_mask_of_the_stored_size_is_turned_with_its_exif_rotated_image(tmp_path):
    from traitpipe.collection.images import stored_orientation
    from traitpipe.segment.parts import check_support_mask

    pixels = np.full((20, 40, 3), 200, np.uint8)
    pixels[2:8, 30:38] = (255, 0, 0)  # a red part, top right as stored
    mask = np.zeros((20, 40), np.uint8)
    mask[2:8, 30:38] = 1  # drawn on the stored pixels
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated 90 degrees clockwise
    Image.fromarray(pixels).save(tmp_path / "side.png", exif=exif.tobytes())
    image = read_image(tmp_path / "side.png")
    stored, orientation = stored_orientation(tmp_path / "side.png")
    assert image.shape[:2] == (40, 20) and stored == (20, 40) and orientation == 6
    labels = check_support_mask(mask, {1: "spot"}, "m.png", image.shape[:2], stored_size=stored,
                                orientation=orientation)
    red = (image[..., 0] > 250) & (image[..., 1] < 5)
    np.testing.assert_array_equal(labels == 1, red)  # the mask lies on the part in the image as shown


def _declared_png(width: int, height: int) -> bytes:
    """A 1x1 PNG whose header declares another size (a decompression bomb's header, without the bomb)."""
    import struct
    import zlib

    data = bytearray(_encode(Image.new("L", (1, 1))))
    ihdr = bytes(data[12:16]) + struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(ihdr))
    return bytes(data)


def test_the_pixel_limit_is_ours_and_checked_before_decoding():
    bomb = _declared_png(30_000, 30_000)  # 900 M pixels: past Pillow's own limit too
    with pytest.raises(ImageError, match=r"too large: 30000x30000 = 900000000 pixels > max_pixels 100000000 "
                                         r"\(collection.max_pixels; refused before decoding\)"):
        read_image(bomb)
    with pytest.raises(ImageError, match="max_pixels 1000"):
        read_image(_declared_png(40, 40), max_pixels=1000)
    # a limit above Pillow's default (89 M warns, 179 M refuses) is the user's to set: the header passes,
    # and the image fails only for what it is (here: no pixel data for the declared size)
    with pytest.raises(ImageError, match="cannot decode"):
        read_image(bomb, max_pixels=10**9)


def test_an_unreadable_reference_image_is_named_as_the_reason_its_species_fails(tmp_path):
    from traitpipe.config import validate_config
    from traitpipe.jobs.masks import load_support

    data = io.BytesIO()
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(data, format="PNG")
    (tmp_path / "ref.png").write_bytes(data.getvalue()[:40])  # truncated
    Image.fromarray(np.ones((20, 20), np.uint8)).save(tmp_path / "mask.png")
    config = validate_config({"collection": {"root": str(tmp_path), "manifest": "m.csv"}})
    chosen = {"Mily alba": (str(tmp_path / "ref.png"), str(tmp_path / "mask.png"))}
    with pytest.raises(ImageError, match=r"^reference image unreadable \(.*ref\.png: .*\); segmenting species "
                                         r"'Mily alba' needs it$"):
        load_support(config, "Mily alba", chosen, None)


def test_twelve_bit_data_in_sixteen_bit_files_keeps_its_grey_levels(tmp_path):
    ramp = np.arange(4096, dtype=np.uint16).reshape(64, 64)  # a 12-bit camera's full range
    for fmt in ("PNG", "TIFF"):
        grey = read_image(_encode(Image.fromarray(ramp), fmt))[..., 0]
        assert len(np.unique(grey)) == 256 and grey.max() == 255  # not the 16 levels of a shift by 8
        np.testing.assert_array_equal(grey, (ramp >> 4).astype(np.uint8))
    full = np.linspace(0, 65535, 64 * 64).astype(np.uint16).reshape(64, 64)  # 16 bits used: shifted by 8
    np.testing.assert_array_equal(read_image(_encode(Image.fromarray(full), "TIFF"))[..., 0], full >> 8)
    rgb = np.random.default_rng(0).integers(0, 256, (6, 7, 3), dtype=np.uint8)
    (tmp_path / "spécimen 标本.tif").write_bytes(_encode(Image.fromarray(rgb), "TIFF"))  # 8-bit TIFF, unicode name
    np.testing.assert_array_equal(read_image(tmp_path / "spécimen 标本.tif"), rgb)
