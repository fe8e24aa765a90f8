"""The report's figures (matplotlib, Agg): overlays of specimens, the evaluation chart, the tree.

Each function takes arrays or tables and returns a :class:`matplotlib.figure.Figure`; :func:`png` turns
one into PNG bytes. Maps are min-max scaled per image for display only.
"""

from __future__ import annotations

import io
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

#: Colour of a warning (random weights) on a figure.
WARNING = "#c00000"


#: Long side, in pixels, of a specimen panel's image as drawn: a panel is shown about 130 pixels wide, and twice
#: that keeps it sharp. A photograph is downsampled to it before anything is drawn (issue 38: at 2400 x 1600,
#: drawing full-size images and maps cost 30 s and 5 GB per species).
DISPLAY_SIDE = 256


def display_image(image: np.ndarray, side: int = DISPLAY_SIDE) -> np.ndarray:
    """An image downsampled (antialiased) so that its long side is at most ``side`` pixels; a smaller one as is.

    Examples
    --------
    >>> display_image(np.zeros((1200, 800, 3), np.uint8)).shape, display_image(np.zeros((64, 32, 3), np.uint8)).shape
    ((256, 171, 3), (64, 32, 3))
    """
    height, width = image.shape[:2]
    scale = side / max(height, width)
    if scale >= 1:
        return image
    from PIL import Image

    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.LANCZOS))


@dataclass
class Panel:
    """One cell of a specimen grid.

    Attributes
    ----------
    image : numpy.ndarray, uint8, shape (H, W, 3)
    heat : numpy.ndarray, float, shape (H, W), or None
        A map to overlay (min-max scaled here, for display).
    labels : numpy.ndarray, integer, shape (H, W), or None
        A label map to overlay (0 = background).
    title : str
    warning : str
        Printed in red under the panel (e.g. "random weights"); "" for none.
    """

    image: np.ndarray
    heat: np.ndarray | None = None
    labels: np.ndarray | None = None
    title: str = ""
    warning: str = ""


def min_max(heat: np.ndarray) -> np.ndarray:
    """Scale a map to [0, 1] (all zero when flat).

    Examples
    --------
    >>> min_max(np.array([1.0, 3.0, 2.0])).tolist()
    [0.0, 1.0, 0.5]
    """
    low, high = float(np.min(heat)), float(np.max(heat))
    return (heat - low) / (high - low) if high > low else np.zeros_like(heat, dtype=float)


def _draw(ax, panel: Panel, n_parts: int) -> None:
    ax.imshow(panel.image)
    if panel.heat is not None:
        ax.imshow(min_max(panel.heat), cmap="jet", alpha=0.5, vmin=0, vmax=1)
    if panel.labels is not None:
        colours = plt.get_cmap("tab10")(np.arange(max(n_parts, 1) + 1) % 10)
        rgba = colours[np.clip(panel.labels.astype(int) - 1, 0, None) % len(colours)]
        rgba[..., 3] = np.where(panel.labels > 0, 0.55, 0.0)
        ax.imshow(rgba)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(textwrap.fill(panel.title, 26), fontsize=6)  # wrapped: a long title never runs into the next
    if panel.warning:
        ax.set_xlabel(panel.warning, color=WARNING, fontsize=7, fontweight="bold")


def specimen_grid(rows: Sequence[Sequence[Panel]], title: str, n_parts: int = 10) -> Figure:
    """A grid of panels: one row per specimen, one column per view (image, SST, each map).

    Parameters
    ----------
    rows : sequence of sequence of Panel
        Every row has the same number of panels.
    title : str
    n_parts : int
        The number of part labels, for the label colours.
    """
    n_rows, n_cols = len(rows), max(len(r) for r in rows)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(1.6 * n_cols, 2.1 * n_rows + 0.4), squeeze=False)
    for r, row in enumerate(rows):
        for c in range(n_cols):
            if c < len(row):
                _draw(axes[r][c], row[c], n_parts)
            else:
                axes[r][c].axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def evaluation_chart(evaluation: pd.DataFrame) -> Figure:
    """Bars of the map scores against the truth: trait energy, trait pointing and RD per map, all
    images and cryptic pairs.

    Parameters
    ----------
    evaluation : pandas.DataFrame
        ``evaluation`` rows (method, alpha, metric, subset, value).
    """
    metrics = [m for m in ("trait_energy", "trait_pointing") if m in set(evaluation["metric"])]
    metrics += sorted(m for m in set(evaluation["metric"]) if str(m).startswith("relative_drop@"))
    n_maps = evaluation[["method", "alpha"]].drop_duplicates().shape[0]
    fig, axes = plt.subplots(1, max(len(metrics), 1), figsize=(4.6 * max(len(metrics), 1), 1.0 + 0.32 * n_maps),
                             squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        rows = evaluation[evaluation["metric"] == metric]
        table = rows.assign(map=[map_name(m, a) for m, a in zip(rows["method"], rows["alpha"])]).pivot_table(
            index="map", columns="subset", values="value", aggfunc="mean")
        table.plot.barh(ax=ax, legend=True, fontsize=7)  # the maps' names on the y axis: none overlaps
        ax.set_title(metric, fontsize=9)
        ax.set_ylabel("")
        ax.invert_yaxis()
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def map_name(method: str, alpha) -> str:
    """How a map is named for a reader: ``gradcam``, ``Finer-gradcam (alpha 1)``.

    Examples
    --------
    >>> map_name("gradcam", None), map_name("gradcam", 1.0)
    ('gradcam', 'Finer-gradcam (alpha 1)')
    """
    if alpha is None or pd.isna(alpha):
        return str(method)
    return f"Finer-{method} (alpha {float(alpha):g})"


def tree_figure(tree, tip_notes: Mapping[str, Sequence[tuple[str, bool | None]]]) -> Figure:
    """The phylogeny as a rectangular cladogram, each tip with its notes: the part each kind of evidence names,
    marked right (green, a tick) or wrong (red, a cross) where the truth is known, black where it is not.

    Parameters
    ----------
    tree : dendropy.Tree
    tip_notes : mapping of str to sequence of (str, bool or None)
        Tip name -> its notes, each (text, whether it is right; None: no truth), printed after it in order.
    """
    leaves = list(tree.leaf_node_iter())
    y = {leaf: i for i, leaf in enumerate(leaves)}
    x = {}
    for node in tree.preorder_node_iter():
        parent = node.parent_node
        x[node] = 0.0 if parent is None else x[parent] + float(node.edge_length or 0.0)
    for node in tree.postorder_node_iter():
        if not node.is_leaf():
            y[node] = float(np.mean([y[child] for child in node.child_node_iter()]))
    depth = max(x.values()) or 1.0
    fig, ax = plt.subplots(figsize=(11, 0.42 * len(leaves) + 0.8))
    for node in tree.preorder_node_iter():
        if node.parent_node is not None:
            ax.plot([x[node.parent_node], x[node]], [y[node], y[node]], color="black", lw=1)
        if not node.is_leaf():
            ys = [y[child] for child in node.child_node_iter()]
            ax.plot([x[node], x[node]], [min(ys), max(ys)], color="black", lw=1)
    marks = {True: ("\u2713", "tab:green"), False: ("\u2717", "tab:red"), None: ("", "black")}
    for leaf in leaves:
        text = ax.text(x[leaf] + 0.02 * depth, y[leaf], leaf.taxon.label, va="center", fontsize=8,
                       fontstyle="italic")
        for note, right in tip_notes.get(leaf.taxon.label, ()):  # each note after the last one
            mark, colour = marks[right]
            text = ax.annotate(f"   {note} {mark}", xycoords=text, xy=(1, 0), va="bottom", fontsize=8, color=colour)
    ax.set_title("The part each kind of evidence names for each species: green \u2713 the part its mark is on, "
                 "red \u2717 another, black where the truth is not known", fontsize=8, loc="left")
    ax.set_xlim(-0.02 * depth, 3.2 * depth)
    ax.set_ylim(-1, len(leaves))
    ax.axis("off")
    fig.tight_layout()
    return fig


def png(fig: Figure, dpi: int = 110) -> bytes:
    """A figure as PNG bytes (the figure is closed)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    plt.close(fig)
    return buffer.getvalue()
