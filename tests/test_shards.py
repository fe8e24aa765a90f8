import numpy as np
import pandas as pd

from traitpipe.collection.shards import in_piece, plan_shards, shard_names, shard_rows


def test_plan_keeps_small_species_whole_and_splits_large_ones():
    counts = {"a": 3, "b": 4, "c": 12, "d": 2}
    plan = plan_shards(counts, 5)
    assert [sum(stop - start for _, start, stop in shard) for shard in plan] == [3, 4, 5, 5, 4]
    assert plan[0] == [("a", 0, 3)] and plan[1] == [("b", 0, 4)]  # b does not fit beside a: new shard
    assert plan[4] == [("c", 10, 12), ("d", 0, 2)]  # the tail of c shares a shard with d
    covered = {name: sum(stop - start for shard in plan for s, start, stop in shard if s == name) for name in counts}
    assert covered == counts


def _assign(frame, shard_size):
    """key -> shard of every row, as the shards' ingest jobs together assign them."""
    rows = pd.concat(shard_rows(frame, shard_size).values(), ignore_index=True)
    kept = rows[in_piece(rows, rows["key"])]
    assert kept["key"].is_unique and len(kept) == len(frame)  # every row lands in exactly one shard
    return dict(zip(kept["key"], kept["shard"]))


def test_assignment_is_stable_when_rows_are_reordered():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"species": rng.choice(list("abcdef"), 200),
                          "key": [f"{i:016x}" for i in rng.integers(0, 2**62, 200)]})
    before = _assign(frame, 16)
    shuffled = frame.sample(frac=1, random_state=1).reset_index(drop=True)
    after = _assign(shuffled, 16)
    assert before == after
    assert sorted(set(before.values())) == shard_names(frame["species"], 16)
    sizes = pd.Series(list(before.values())).value_counts()
    assert sizes.max() <= 16
    # species-contiguous: each shard holds a run of the sorted species
    order = frame.assign(shard=frame["key"].map(before)).sort_values(["species", "key"])
    assert order["shard"].is_monotonic_increasing


def test_a_shard_reads_only_the_rows_of_its_species():
    frame = pd.DataFrame({"species": list("aabbbbbc"), "key": list("hgfedcba")})
    rows = shard_rows(frame, 3)
    assert {name: sorted(set(r["species"])) for name, r in rows.items()} == {
        "00000": ["a"], "00001": ["b"], "00002": ["b", "c"]}
    assert len(rows["00001"]) == 5  # the whole of b: which rows it keeps depends on their keys
    labels = pd.concat(rows.values()).drop_duplicates("species").set_index("species")["label"]
    assert labels.to_dict() == {"a": 0, "b": 1, "c": 2}  # the collection's label, not the shard's
