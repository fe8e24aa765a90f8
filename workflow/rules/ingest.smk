rule ingest:
    input:
        manifest=str(collection_file(CFG, "manifest")),
    output:
        ingest_outputs(),
    log:
        f"{LOGS}/ingest.log",
    benchmark:
        f"{BENCHMARKS}/ingest.tsv"
    params:
        settings=settings("collection", "shard_size", "ingest"),
    threads: CFG["ingest"]["threads"]
    shell:
        "{TRAITPIPE} job ingest --config {RUN_CONFIG} > {log} 2>&1"
