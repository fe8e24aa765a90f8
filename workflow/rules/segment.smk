rule segment:
    input:
        images=table_file("images", "{shard}"),
    output:
        maps=directory(map_file("segment", "{shard}")),
        parts=table_file("parts", "{shard}"),
        failures=table_file("failures", "{shard}", "segment"),
    params:
        settings=settings("segment", "device"),
    log:
        f"{LOGS}/segment/{{shard}}.log",
    benchmark:
        f"{BENCHMARKS}/segment/{{shard}}.tsv"
    threads: workflow.cores
    shell:
        "{TRAITPIPE} job segment --config {RUN_CONFIG} --shard {wildcards.shard} --threads {threads} > {log} 2>&1"
