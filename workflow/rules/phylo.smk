rule phylo_train:
    input:
        images=[table_file("images", s) for s in SHARDS],
        phylogeny=PHYLOGENY,
        checkpoint=local_files(CFG["phylo"]["checkpoint"]),
    output:
        weights=model_file("phylonn.pt"),
        description=model_file("phylonn.json"),
        evaluation=table_file("evaluation", "phylo_train", "phylo_train"),
        failures=table_file("failures", "all", "phylo_train"),
    params:
        run_config=RUN_CONFIG,
        settings=settings("phylo", "device"),
        phylogeny=lambda wildcards, input: option("phylogeny", input.phylogeny),
    conda:
        CONDA_ENV
    log:
        f"{LOGS}/phylo_train.log",
    benchmark:
        f"{BENCHMARKS}/phylo_train.tsv"
    resources:
        gpu=GPU,
    threads: job_threads("phylo_train")
    shell:
        "traitpipe job phylo_train --config {params.run_config:q} --threads {threads} --images {input.images:q}"
        " {params.phylogeny} --weights {output.weights:q} --description {output.description:q}"
        " --evaluation {output.evaluation:q} --failures {output.failures:q} > {log:q} 2>&1"


rule codes:
    input:
        images=table_file("images", "{shard}"),
        weights=model_file("phylonn.pt"),
        description=model_file("phylonn.json"),
    output:
        codes=table_file("codes", "{shard}"),
        failures=table_file("failures", "{shard}", "codes"),
    params:
        run_config=RUN_CONFIG,
        settings=settings("phylo", "device"),
    conda:
        CONDA_ENV
    log:
        f"{LOGS}/codes/{{shard}}.log",
    benchmark:
        f"{BENCHMARKS}/codes/{{shard}}.tsv"
    resources:
        gpu=GPU,
    threads: job_threads("codes")
    shell:
        "traitpipe job codes --config {params.run_config:q} --threads {threads} --images {input.images:q}"
        " --weights {input.weights:q} --description {input.description:q}"
        " --codes {output.codes:q} --failures {output.failures:q} > {log:q} 2>&1"


rule phylo_eval:
    input:
        codes=[table_file("codes", s) for s in SHARDS],
        images=[table_file("images", s) for s in SHARDS],
        description=model_file("phylonn.json"),
        phylogeny=PHYLOGENY,
    output:
        distances=table_file("species_distances", "all"),
        evaluation=table_file("evaluation", "phylonn", "phylonn"),
    params:
        run_config=RUN_CONFIG,
        settings=settings("phylo"),
        phylogeny=lambda wildcards, input: option("phylogeny", input.phylogeny),
    conda:
        CONDA_ENV
    log:
        f"{LOGS}/phylo_eval.log",
    benchmark:
        f"{BENCHMARKS}/phylo_eval.tsv"
    shell:
        "traitpipe job phylo_eval --config {params.run_config:q} --codes {input.codes:q} --images {input.images:q}"
        " --description {input.description:q} {params.phylogeny}"
        " --distances {output.distances:q} --evaluation {output.evaluation:q} > {log:q} 2>&1"
