"""The interventions' answer for one model: per species, the part whose removal most lowers the margin to the
closest class (``species_traits``, method ``interventions-<model>``), from every shard's ``part_effects``."""

from __future__ import annotations

from traitpipe.jobs.step import Step
from traitpipe.store.tables import read_table_files
from traitpipe.traits.species import effect_parts


def main(argv: list[str] | None = None) -> None:
    """``traitpipe job effect_traits --config RUN_CONFIG --part-effects T.. --species-traits T``."""
    step = Step("effect_traits", argv, paths=("species_traits",), lists=("part_effects",), compute=False)
    traits = effect_parts(read_table_files(step.args.part_effects, "part_effects"))
    step.write("species_traits", traits, step.args.species_traits)
    for row in traits.itertuples():
        step.finish(f"{row.species}: {row.part} (margin {row.delta_margin:+.3f} when removed, the largest drop in "
                    f"{row.consistency:.0%} of {row.n} images)")
