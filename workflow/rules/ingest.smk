# Media named by URL (collection.fetch): one job per batch of URLs (a shard's), img2dataset downloading them
# into the media folder. The batch's name is the digest of its URLs: a rerun with the same URLs fetches nothing.
rule fetch:
    output:
        media=f"{MEDIA}/{{batch}}.parquet",
    conda:
        CONDA_ENV
    log:
        f"{LOGS}/fetch/{{batch}}.log",
    benchmark:
        f"{BENCHMARKS}/fetch/{{batch}}.tsv"
    params:
        run_config=RUN_CONFIG,
        urls=lambda wildcards: str(urls_path(RESULTS, wildcards.batch)),
    resources:
        fetch=1,
    shell:
        "traitpipe job fetch --config {params.run_config:q} --urls {params.urls:q} --media {output.media:q}"
        " > {log:q} 2>&1"


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
        # collection.fetch aside: where each URL's image lies is in the rows (their digest); how it was fetched
        # changes no image
        settings=canonical_json({"collection": {k: v for k, v in CFG["collection"].items() if k != "fetch"},
                                 "ingest": CFG["ingest"]}),
    threads: CFG["ingest"]["threads"]
    shell:
        "traitpipe job ingest --config {params.run_config:q} --rows {params.rows:q}"
        " --images {output.images:q} --failures {output.failures:q} > {log:q} 2>&1"
