rule ingest:
    input:
        config=RUN_CONFIG,
        manifest=str(collection_file(CFG, "manifest")),
    output:
        ingest_outputs(),
    log:
        f"{LOGS}/ingest.log",
    benchmark:
        f"{BENCHMARKS}/ingest.tsv"
    threads: CFG["ingest"]["threads"]
    shell:
        "{TRAITPIPE} job ingest --config {input.config} > {log} 2>&1"
