rule cam_parts:
    input:
        images=table_file("images", "{shard}"),
        labels=map_file("segment", "{shard}"),
        maps=map_file("cam-{mapped}", "{shard}"),
        heads=lambda wildcards: heads_files(wildcards.mapped, [wildcards.shard]),
        truth=lambda wildcards: truth_files("trait_truth", wildcards.shard),
    output:
        cam_parts=table_file("cam_parts", "{shard}", "{mapped}"),
        map_truth=[table_file("map_truth", "{shard}", "{mapped}")] if TRUTH["trait_truth"] else [],
        failures=table_file("failures", "{shard}", "cam_parts-{mapped}"),
    params:
        labels=lambda wildcards, input: store(input.labels),
        maps=lambda wildcards, input: store(input.maps),
        heads=lambda wildcards, input: option("heads", input.heads),
        map_truth=lambda wildcards, output: option("map-truth", output.map_truth),
        run_config=RUN_CONFIG,
    conda:
        CONDA_ENV
    log:
        f"{LOGS}/cam_parts/{{mapped}}-{{shard}}.log",
    benchmark:
        f"{BENCHMARKS}/cam_parts/{{mapped}}-{{shard}}.tsv"
    shell:
        "traitpipe job cam_parts --config {params.run_config:q} --images {input.images:q} --labels {params.labels:q}"
        " --maps {params.maps:q} {params.heads} --cam-parts {output.cam_parts:q} {params.map_truth}"
        " --failures {output.failures:q} > {log:q} 2>&1"


rule part_truth:
    input:
        images=table_file("images", "{shard}"),
        labels=map_file("segment", "{shard}"),
        parts=table_file("parts", "{shard}"),
        truth=lambda wildcards: truth_files("parts_truth", wildcards.shard),
    output:
        part_truth=table_file("part_truth", "{shard}"),
        failures=table_file("failures", "{shard}", "part_truth"),
    params:
        labels=lambda wildcards, input: store(input.labels),
        run_config=RUN_CONFIG,
    conda:
        CONDA_ENV
    log:
        f"{LOGS}/part_truth/{{shard}}.log",
    benchmark:
        f"{BENCHMARKS}/part_truth/{{shard}}.tsv"
    shell:
        "traitpipe job part_truth --config {params.run_config:q} --images {input.images:q} --labels {params.labels:q}"
        " --parts {input.parts:q} --part-truth {output.part_truth:q} --failures {output.failures:q} > {log:q} 2>&1"


rule summarize:
    input:
        images=[table_file("images", s) for s in SHARDS],
        maps=[map_file("cam-{mapped}", s) for s in SHARDS],
        labels=[map_file("segment", s) for s in SHARDS],
        cam_parts=[table_file("cam_parts", s, "{mapped}") for s in SHARDS],
        heads=lambda wildcards: heads_files(wildcards.mapped, SHARDS),
    output:
        species_maps=f"{RESULTS}/maps/species/cam-{{mapped}}.zarr/zarr.json",
        species_traits=table_file("species_traits", "all", "{mapped}"),
    params:
        maps=lambda wildcards, input: [store(m) for m in input.maps],
        labels=lambda wildcards, input: [store(m) for m in input.labels],
        species_maps=lambda wildcards, output: store(output.species_maps),
        run_config=RUN_CONFIG,
        settings=settings("summarize"),
    conda:
        CONDA_ENV
    log:
        f"{LOGS}/summarize/{{mapped}}.log",
    benchmark:
        f"{BENCHMARKS}/summarize/{{mapped}}.tsv"
    threads: job_threads("summarize")
    shell:
        "traitpipe job summarize --config {params.run_config:q} --images {input.images:q} --maps {params.maps:q}"
        " --labels {params.labels:q} --cam-parts {input.cam_parts:q} --heads {input.heads:q}"
        " --species-maps {params.species_maps:q} --species-traits {output.species_traits:q} > {log:q} 2>&1"


rule part_effects:
    input:
        images=table_file("images", "{shard}"),
        labels=map_file("segment", "{shard}"),
        models=lambda wildcards: [model_file(f"{n}.{ext}") for n in PLAN.intervention(wildcards.intervened)[0].models
                                  for ext in ("pt", "json")],
    output:
        part_effects=table_file("part_effects", "{shard}", "{intervened}"),
        failures=table_file("failures", "{shard}", "part_effects-{intervened}"),
    params:
        labels=lambda wildcards, input: store(input.labels),
        loader=lambda wildcards: PLAN.intervention(wildcards.intervened)[0].models[0],
        prompts=lambda wildcards: option("prompts", optional(PLAN.intervention(wildcards.intervened)[1].get("prompts"))),
        models=lambda wildcards, input: model_options(PLAN.intervention(wildcards.intervened)[0].models, input.models,
                                                      first="weights"),
        run_config=RUN_CONFIG,
        settings=settings("interventions", "device"),
    conda:
        CONDA_ENV
    log:
        f"{LOGS}/part_effects/{{intervened}}-{{shard}}.log",
    benchmark:
        f"{BENCHMARKS}/part_effects/{{intervened}}-{{shard}}.tsv"
    resources:
        gpu=GPU,
    threads: job_threads("part_effects")
    shell:
        "traitpipe job part_effects --config {params.run_config:q} --threads {threads} --model {wildcards.intervened}"
        " --loader {params.loader} {params.prompts} --images {input.images:q} --labels {params.labels:q}"
        " {params.models} --part-effects {output.part_effects:q} --failures {output.failures:q} > {log:q} 2>&1"


rule effect_traits:
    input:
        part_effects=[table_file("part_effects", s, "{intervened}") for s in SHARDS],
    output:
        species_traits=table_file("species_traits", "all", "interventions-{intervened}"),
    params:
        run_config=RUN_CONFIG,
    conda:
        CONDA_ENV
    log:
        f"{LOGS}/effect_traits/{{intervened}}.log",
    shell:
        "traitpipe job effect_traits --config {params.run_config:q} --part-effects {input.part_effects:q}"
        " --species-traits {output.species_traits:q} > {log:q} 2>&1"


rule evaluate:
    input:
        images=[table_file("images", s) for s in SHARDS],
        cams=[table_file("cams", s, m) for m in CAMS for s in SHARDS],
        part_truth=[table_file("part_truth", s) for s in SHARDS] if SCORE_PARTS else [],
        map_truth=[table_file("map_truth", s, m) for m in MAPPED for s in SHARDS] if SCORE_MAPS else [],
        cryptic_pairs=collection_files(CFG["evaluate"]["cryptic_pairs"], CFG["collection"]["root"]),
        sam2=[model_file("sam2_trained.json")] if TRAINED_SAM2 and SCORE_PARTS else [],
        retrieval=[table_file("retrieval", s) for s in SHARDS] if SCORE_PARTS and RETRIEVAL else [],
        species_traits=PLAN.species_traits_files(),
        cam_parts=[table_file("cam_parts", s, m) for m in PLAN.intervened for s in SHARDS],
        part_effects=[table_file("part_effects", s, m) for m in PLAN.effect_models for s in SHARDS],
    output:
        evaluation=table_file("evaluation", "evaluate", "evaluate"),
    params:
        cryptic_pairs=lambda wildcards, input: option("cryptic-pairs", input.cryptic_pairs),
        sam2=lambda wildcards, input: option("sam2", input.sam2),
        run_config=RUN_CONFIG,
        settings=settings("evaluate"),
    conda:
        CONDA_ENV
    log:
        f"{LOGS}/evaluate.log",
    benchmark:
        f"{BENCHMARKS}/evaluate.tsv"
    shell:
        "traitpipe job evaluate --config {params.run_config:q} --images {input.images:q} --cams {input.cams:q}"
        " --part-truth {input.part_truth:q} --map-truth {input.map_truth:q} --retrieval {input.retrieval:q}"
        " --species-traits {input.species_traits:q} --cam-parts {input.cam_parts:q}"
        " --part-effects {input.part_effects:q}"
        " {params.cryptic_pairs} {params.sam2}"
        " --evaluation {output.evaluation:q} > {log:q} 2>&1"
