# The models and map products of traitpipe/products.py: one train rule per model the run uses (named for its
# job), one map rule per kind of map product (per shard and product), each made from its registry entry.
# A shell line is formatted when its job runs, after the loop: what it takes from the entry comes through params.
for model in PLAN.trained():

    rule:
        name:
            model.job
        input:
            images=[table_file("images", s) for s in SHARDS],
            needs=[model_file(f"{n}.{ext}") for n in model.needs for ext in ("pt", "json")],
            pairs=collection_files(CFG["evaluate"]["cryptic_pairs"], CFG["collection"]["root"]),
            **config_files(model),
        output:
            weights=model_file(f"{model.name}.pt"),
            description=model_file(f"{model.name}.json"),
            evaluation=table_file("evaluation", model.name, model.name),
            failures=table_file("failures", "all", model.job),
        params:
            job=model.job,
            run_config=RUN_CONFIG,
            settings=canonical_json(model.depends_on(CFG)),
            options=lambda wildcards, input, model=model: " ".join([
                model_options(model.needs, input.needs), option("cryptic-pairs", input.pairs),
                *(option(name.replace("_", "-"), getattr(input, name)) for name in model.options)]),
        conda:
            CONDA_ENV
        log:
            f"{LOGS}/{model.job}.log",
        benchmark:
            f"{BENCHMARKS}/{model.job}.tsv"
        resources:
            gpu=GPU,
        threads: job_threads(model.job)
        shell:
            "traitpipe job {params.job}"
            " --config {params.run_config:q} --threads {threads} --images {input.images:q} {params.options}"
            " --weights {output.weights:q} --description {output.description:q}"
            " --evaluation {output.evaluation:q} --failures {output.failures:q} > {log:q} 2>&1"


for kind in PLAN.map_kinds():

    rule:
        name:
            kind.rule
        input:
            images=table_file("images", "{shard}"),
            models=[model_file(f"{n}.{ext}") for n in kind.models for ext in ("pt", "json")],
        output:
            maps=map_file(f"cam-{kind.product}", "{shard}"),
            table=table_file(kind.table, "{shard}", kind.table_partition(kind.product)),
            failures=table_file("failures", "{shard}", f"cam-{kind.product}"),
        params:
            job=kind.job,
            options=lambda wildcards, kind=kind: " ".join(option(flag, getattr(wildcards, name))
                                                          for flag, name in kind.options),
            table_option=f"--{kind.table_option}",
            maps=lambda wildcards, output: store(output.maps),
            run_config=RUN_CONFIG,
            settings=lambda wildcards, kind=kind: canonical_json(kind.settings(CFG, **dict(wildcards.items()))),
            models=lambda wildcards, input, kind=kind: model_options(kind.models, input.models, first="weights"),
        conda:
            CONDA_ENV
        log:
            f"{LOGS}/explain/{kind.product}-{{shard}}.log",
        benchmark:
            f"{BENCHMARKS}/explain/{kind.product}-{{shard}}.tsv"
        resources:
            gpu=GPU,
        threads: job_threads(kind.rule)
        shell:
            "traitpipe job {params.job} {params.options}"
            " --config {params.run_config:q} --threads {threads} --images {input.images:q} {params.models}"
            " --maps {params.maps:q} {params.table_option} {output.table:q}"
            " --failures {output.failures:q} > {log:q} 2>&1"
