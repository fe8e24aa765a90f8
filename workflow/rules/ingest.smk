rule ingest:
    input:
        manifest=MANIFEST_FILE,
    output:
        images=[table_file("images", s) for s in SHARDS],
        failures=[table_file("failures", s, "ingest") for s in SHARDS],
    conda:
        CONDA_ENV
    log:
        f"{LOGS}/ingest.log",
    benchmark:
        f"{BENCHMARKS}/ingest.tsv"
    params:
        run_config=RUN_CONFIG,
        shards=SHARDS,
        settings=settings("collection", "shard_size", "ingest"),
    threads: CFG["ingest"]["threads"]
    shell:
        "traitpipe job ingest --config {params.run_config} --manifest {input.manifest:q} --shards {params.shards}"
        " --images {output.images:q} --failures {output.failures:q} > {log} 2>&1"
