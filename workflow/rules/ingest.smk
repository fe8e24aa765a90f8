rule ingest:
    input:
        manifest=MANIFEST_FILE,
    output:
        images=[table_file("images", s) for s in SHARDS],
        failures=[table_file("failures", s, "ingest") for s in SHARDS],
    log:
        f"{LOGS}/ingest.log",
    benchmark:
        f"{BENCHMARKS}/ingest.tsv"
    params:
        settings=settings("collection", "shard_size", "ingest"),
    threads: CFG["ingest"]["threads"]
    shell:
        "{TRAITPIPE} job ingest --config {RUN_CONFIG} --manifest {input.manifest:q} --shards {SHARDS}"
        " --images {output.images:q} --failures {output.failures:q} > {log} 2>&1"
