rule ingest:
    input:
        images=shard_image_files,
    output:
        images=table_file("images", "{shard}"),
        failures=table_file("failures", "{shard}", "ingest"),
    conda:
        CONDA_ENV
    log:
        f"{LOGS}/ingest/{{shard}}.log",
    benchmark:
        f"{BENCHMARKS}/ingest/{{shard}}.tsv"
    params:
        run_config=RUN_CONFIG,
        rows=lambda wildcards: str(rows_path(RESULTS, wildcards.shard)),
        rows_digest=lambda wildcards: ROWS_DIGEST[wildcards.shard],
        settings=settings("collection", "ingest"),
    threads: CFG["ingest"]["threads"]
    shell:
        "traitpipe job ingest --config {params.run_config:q} --rows {params.rows:q}"
        " --images {output.images:q} --failures {output.failures:q} > {log:q} 2>&1"
