rule sam2_train:
    input:
        images=[table_file("images", s) for s in SHARDS],
        truth=[f for s in SHARDS for f in truth_files("parts_truth", s)],
        parts=PARTS_FILE,
    output:
        weights=model_file("sam2_trained.pt"),
        description=model_file("sam2_trained.json"),
    params:
        run_config=RUN_CONFIG,
        settings=settings("segment", "device"),
    conda:
        CONDA_ENV
    log:
        f"{LOGS}/sam2_train.log",
    benchmark:
        f"{BENCHMARKS}/sam2_train.tsv"
    resources:
        gpu=GPU,
    threads: job_threads("sam2_train")
    # The longest step, and the segmentation path waits on it: started before the other training steps (a job
    # with more threads than are free would otherwise wait until the one-thread jobs are all done).
    priority: 1
    shell:
        "traitpipe job sam2_train --config {params.run_config:q} --threads {threads} --images {input.images:q}"
        " --weights {output.weights:q} --description {output.description:q} > {log:q} 2>&1"


rule sst_finetune:
    input:
        images=[table_file("images", s) for s in SHARDS],
        references=reference_files(sorted(REFERENCES)),
        parts=PARTS_FILE,
        checkpoint=local_files(CFG["segment"]["checkpoint"]),
        trained=TRAINED_SAM2,
        trained_description=[model_file("sam2_trained.json")] if TRAINED_SAM2 and SCORE_FINETUNE else [],
        truth=[f for s in SHARDS for f in truth_files("parts_truth", s)] if SCORE_FINETUNE else [],
    output:
        weights=model_file("sam2_finetuned.pt"),
        description=model_file("sam2_finetuned.json"),
        evaluation=[table_file("evaluation", "sst_finetune", "sst_finetune")] if SCORE_FINETUNE else [],
    params:
        run_config=RUN_CONFIG,
        settings=settings("segment", "device"),
        references=reference_options(REFERENCES, sorted(REFERENCES)),
        trained=lambda wildcards, input: option("trained", input.trained),
        trained_description=lambda wildcards, input: option("trained-description", input.trained_description),
        evaluation=lambda wildcards, output: option("evaluation", output.evaluation),
    conda:
        CONDA_ENV
    log:
        f"{LOGS}/sst_finetune.log",
    benchmark:
        f"{BENCHMARKS}/sst_finetune.tsv"
    resources:
        gpu=GPU,
    threads: job_threads("sst_finetune")
    shell:
        "traitpipe job sst_finetune --config {params.run_config:q} --threads {threads} --images {input.images:q}"
        " {params.references} {params.trained} {params.trained_description} --weights {output.weights:q}"
        " --description {output.description:q} {params.evaluation} > {log:q} 2>&1"


rule segment:
    input:
        images=table_file("images", "{shard}"),
        references=shard_references,
        parts=PARTS_FILE,
        checkpoint=local_files(CFG["segment"]["checkpoint"]),
        tuned=[model_file("sam2_finetuned.pt")] if CFG["segment"]["finetune"]["enabled"] else [],
        trained=TRAINED_SAM2,
    output:
        maps=map_file("segment", "{shard}"),
        parts=table_file("parts", "{shard}"),
        failures=table_file("failures", "{shard}", "segment"),
        retrieval=[table_file("retrieval", "{shard}")] if RETRIEVAL else [],
    params:
        maps=lambda wildcards, output: store(output.maps),
        run_config=RUN_CONFIG,
        settings=settings("segment", "device"),
        references=lambda wildcards: reference_options(REFERENCES, SPECIES_OF_SHARD[wildcards.shard]),
        tuned=lambda wildcards, input: option("tuned", input.tuned),
        trained=lambda wildcards, input: option("trained", input.trained),
        retrieval=lambda wildcards, output: option("retrieval", output.retrieval),
    conda:
        CONDA_ENV
    log:
        f"{LOGS}/segment/{{shard}}.log",
    benchmark:
        f"{BENCHMARKS}/segment/{{shard}}.tsv"
    resources:
        gpu=GPU,
    threads: job_threads("segment")
    shell:
        "traitpipe job segment --config {params.run_config:q} --threads {threads} --images {input.images:q}"
        " {params.references} --maps {params.maps:q} --parts {output.parts:q}"
        " --failures {output.failures:q} {params.tuned} {params.trained} {params.retrieval} > {log:q} 2>&1"
