rule classifier:
    input:
        images=[table_file("images", s) for s in SHARDS],
    output:
        weights=model_file("classifier.pt"),
        description=model_file("classifier.json"),
        evaluation=table_file("evaluation", "classifier", "classifier"),
        failures=table_file("failures", "all", "classifier"),
    params:
        settings=settings("classifier", "device"),
    log:
        f"{LOGS}/classifier.log",
    benchmark:
        f"{BENCHMARKS}/classifier.tsv"
    threads: workflow.cores
    shell:
        "{TRAITPIPE} job classifier --config {RUN_CONFIG} --threads {threads} > {log} 2>&1"


rule explain:
    input:
        images=table_file("images", "{shard}"),
        weights=model_file("classifier.pt"),
        description=model_file("classifier.json"),
    output:
        maps=directory(map_file("cam-{method}", "{shard}")),
        cams=table_file("cams", "{shard}", "{method}"),
        failures=table_file("failures", "{shard}", "cam-{method}"),
    params:
        settings=explain_settings,
    log:
        f"{LOGS}/explain/{{method}}-{{shard}}.log",
    benchmark:
        f"{BENCHMARKS}/explain/{{method}}-{{shard}}.tsv"
    threads: workflow.cores
    shell:
        "{TRAITPIPE} job explain --config {RUN_CONFIG} --method {wildcards.method} --shard {wildcards.shard}"
        " --threads {threads} > {log} 2>&1"
