rule report:
    input:
        images=[table_file("images", s) for s in SHARDS],
        failures=PLAN.failure_files(),
        evaluation=PLAN.evaluation_files(),
        species_traits=PLAN.species_traits_files(),
        heads=[file for m in MAPPED for file in heads_files(m, SHARDS)],
        maps=[map_file(p, s) for p in MAP_PRODUCTS for s in SHARDS],
        phylogeny=PHYLOGENY,
        phylonn=[model_file("phylonn.json")] if CFG["phylo"]["enabled"] else [],
        cryptic_pairs=collection_files(CFG["evaluate"]["cryptic_pairs"], CFG["collection"]["root"]),
    output:
        # marked for `snakemake --report`: Snakemake's report of a run carries this one
        report=report(f"{RESULTS}/report.html", category="traitpipe", labels={"file": "report.html"}),
        figures=directory(f"{RESULTS}/figures"),
    params:
        maps=lambda wildcards, input: [store(m) for m in input.maps],
        phylogeny=lambda wildcards, input: option("phylogeny", input.phylogeny),
        phylonn=lambda wildcards, input: option("phylonn", input.phylonn),
        cryptic_pairs=lambda wildcards, input: option("cryptic-pairs", input.cryptic_pairs),
        run_config=RUN_CONFIG,
        settings=settings("report"),
    conda:
        CONDA_ENV
    log:
        f"{LOGS}/report.log",
    benchmark:
        f"{BENCHMARKS}/report.tsv"
    shell:
        "traitpipe job report --config {params.run_config:q} --images {input.images:q} --failures {input.failures:q}"
        " --evaluation {input.evaluation:q} --species-traits {input.species_traits:q} --heads {input.heads:q}"
        " --maps {params.maps:q} {params.phylogeny} {params.phylonn} {params.cryptic_pairs}"
        " --report {output.report:q} --figures {output.figures:q} > {log:q} 2>&1"
