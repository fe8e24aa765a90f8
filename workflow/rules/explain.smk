rule classifier:
    input:
        images=[table_file("images", s) for s in SHARDS],
        checkpoint=local_file(CFG["classifier"]["checkpoint"]),
        classes=collection_files(CFG["classifier"]["classes"]),
    output:
        weights=model_file("classifier.pt"),
        description=model_file("classifier.json"),
        evaluation=table_file("evaluation", "classifier", "classifier"),
        failures=table_file("failures", "all", "classifier"),
    params:
        run_config=RUN_CONFIG,
        settings=settings("classifier", "device"),
    conda:
        CONDA_ENV
    log:
        f"{LOGS}/classifier.log",
    benchmark:
        f"{BENCHMARKS}/classifier.tsv"
    resources:
        gpu=GPU,
    threads: job_threads("classifier")
    shell:
        "traitpipe job classifier --config {params.run_config:q} --threads {threads} --images {input.images:q}"
        " --weights {output.weights:q} --description {output.description:q}"
        " --evaluation {output.evaluation:q} --failures {output.failures:q} > {log:q} 2>&1"


rule explain:
    input:
        images=table_file("images", "{shard}"),
        weights=model_file("classifier.pt"),
        description=model_file("classifier.json"),
    output:
        maps=map_file("cam-{method}", "{shard}"),
        cams=table_file("cams", "{shard}", "{method}"),
        failures=table_file("failures", "{shard}", "cam-{method}"),
    params:
        maps=lambda wildcards, output: store(output.maps),
        run_config=RUN_CONFIG,
        settings=method_settings("explain", "method"),
    conda:
        CONDA_ENV
    log:
        f"{LOGS}/explain/{{method}}-{{shard}}.log",
    benchmark:
        f"{BENCHMARKS}/explain/{{method}}-{{shard}}.tsv"
    resources:
        gpu=GPU,
    threads: job_threads("explain")
    shell:
        "traitpipe job explain --config {params.run_config:q} --method {wildcards.method:q} --threads {threads}"
        " --images {input.images:q} --weights {input.weights:q} --description {input.description:q}"
        " --maps {params.maps:q} --cams {output.cams:q} --failures {output.failures:q} > {log:q} 2>&1"


rule prompt_cam_train:
    input:
        images=[table_file("images", s) for s in SHARDS],
        classifier=model_file("classifier.pt"),
        classifier_description=model_file("classifier.json"),
        checkpoint=local_file(CFG["prompt_cam"]["checkpoint"]),
        classes=collection_files(CFG["prompt_cam"]["classes"]),
    output:
        weights=model_file("prompt_cam.pt"),
        description=model_file("prompt_cam.json"),
        evaluation=table_file("evaluation", "prompt_cam", "prompt_cam"),
        failures=table_file("failures", "all", "prompt_cam_train"),
    params:
        run_config=RUN_CONFIG,
        settings=settings("prompt_cam", "device"),
    conda:
        CONDA_ENV
    log:
        f"{LOGS}/prompt_cam_train.log",
    benchmark:
        f"{BENCHMARKS}/prompt_cam_train.tsv"
    resources:
        gpu=GPU,
    threads: job_threads("prompt_cam_train")
    shell:
        "traitpipe job prompt_cam_train --config {params.run_config:q} --threads {threads} --images {input.images:q}"
        " --classifier {input.classifier:q} --classifier-description {input.classifier_description:q}"
        " --weights {output.weights:q} --description {output.description:q}"
        " --evaluation {output.evaluation:q} --failures {output.failures:q} > {log:q} 2>&1"


rule prompt_cam:
    input:
        images=table_file("images", "{shard}"),
        weights=model_file("prompt_cam.pt"),
        description=model_file("prompt_cam.json"),
        classifier=model_file("classifier.pt"),
        classifier_description=model_file("classifier.json"),
    output:
        maps=map_file("cam-promptcam", "{shard}"),
        heads=table_file("prompt_heads", "{shard}"),
        failures=table_file("failures", "{shard}", "cam-promptcam"),
    params:
        maps=lambda wildcards, output: store(output.maps),
        run_config=RUN_CONFIG,
        settings=settings("prompt_cam", "device"),
    conda:
        CONDA_ENV
    log:
        f"{LOGS}/explain/promptcam-{{shard}}.log",
    benchmark:
        f"{BENCHMARKS}/explain/promptcam-{{shard}}.tsv"
    resources:
        gpu=GPU,
    threads: job_threads("prompt_cam")
    shell:
        "traitpipe job prompt_cam --config {params.run_config:q} --threads {threads} --images {input.images:q}"
        " --weights {input.weights:q} --description {input.description:q} --classifier {input.classifier:q}"
        " --classifier-description {input.classifier_description:q}"
        " --maps {params.maps:q} --heads {output.heads:q} --failures {output.failures:q} > {log:q} 2>&1"


rule intr_train:
    input:
        images=[table_file("images", s) for s in SHARDS],
        checkpoint=local_file(CFG["intr"]["checkpoint"]),
        classes=collection_files(CFG["intr"]["classes"]),
    output:
        weights=model_file("intr.pt"),
        description=model_file("intr.json"),
        evaluation=table_file("evaluation", "intr", "intr"),
        failures=table_file("failures", "all", "intr_train"),
    params:
        run_config=RUN_CONFIG,
        settings=settings("intr", "device"),
    conda:
        CONDA_ENV
    log:
        f"{LOGS}/intr_train.log",
    benchmark:
        f"{BENCHMARKS}/intr_train.tsv"
    resources:
        gpu=GPU,
    threads: job_threads("intr_train")
    shell:
        "traitpipe job intr_train --config {params.run_config:q} --threads {threads} --images {input.images:q}"
        " --weights {output.weights:q} --description {output.description:q}"
        " --evaluation {output.evaluation:q} --failures {output.failures:q} > {log:q} 2>&1"


rule intr:
    input:
        images=table_file("images", "{shard}"),
        weights=model_file("intr.pt"),
        description=model_file("intr.json"),
    output:
        maps=map_file("cam-intr", "{shard}"),
        cams=table_file("cams", "{shard}", "intr"),
        failures=table_file("failures", "{shard}", "cam-intr"),
    params:
        maps=lambda wildcards, output: store(output.maps),
        run_config=RUN_CONFIG,
        settings=INTR_SETTINGS,
    conda:
        CONDA_ENV
    log:
        f"{LOGS}/explain/intr-{{shard}}.log",
    benchmark:
        f"{BENCHMARKS}/explain/intr-{{shard}}.tsv"
    resources:
        gpu=GPU,
    threads: job_threads("intr")
    shell:
        "traitpipe job intr --config {params.run_config:q} --threads {threads} --images {input.images:q}"
        " --weights {input.weights:q} --description {input.description:q}"
        " --maps {params.maps:q} --cams {output.cams:q} --failures {output.failures:q} > {log:q} 2>&1"


rule clip_model:
    input:
        images=[table_file("images", s) for s in SHARDS],
        checkpoint=checkpoint_files(CFG["clip"]["checkpoint"]),
        model=local_file(CFG["clip"]["model"]),
        concepts=collection_files(CFG["clip"]["prompts"]["concepts"]),
        common_names=collection_files(CFG["clip"]["prompts"]["common_names"]),
    output:
        weights=model_file("clip.pt"),
        description=model_file("clip.json"),
        evaluation=table_file("evaluation", "clip", "clip"),
        failures=table_file("failures", "all", "clip_model"),
    params:
        run_config=RUN_CONFIG,
        settings=clip_model_settings(),
        files=lambda wildcards, input: " ".join([option("concepts", input.concepts),
                                                 option("common-names", input.common_names)]),
    conda:
        CONDA_ENV
    log:
        f"{LOGS}/clip_model.log",
    benchmark:
        f"{BENCHMARKS}/clip_model.tsv"
    resources:
        gpu=GPU,
    threads: job_threads("clip_model")
    shell:
        "traitpipe job clip_model --config {params.run_config:q} --threads {threads} --images {input.images:q}"
        " {params.files} --weights {output.weights:q} --description {output.description:q}"
        " --evaluation {output.evaluation:q} --failures {output.failures:q} > {log:q} 2>&1"


rule clip:
    input:
        images=table_file("images", "{shard}"),
        weights=model_file("clip.pt"),
        description=model_file("clip.json"),
    output:
        maps=map_file("cam-clip-{prompts}-{clip_method}", "{shard}"),
        cams=table_file("cams", "{shard}", "clip-{prompts}-{clip_method}"),
        failures=table_file("failures", "{shard}", "cam-clip-{prompts}-{clip_method}"),
    params:
        maps=lambda wildcards, output: store(output.maps),
        run_config=RUN_CONFIG,
        settings=method_settings("clip", "clip_method"),
    conda:
        CONDA_ENV
    log:
        f"{LOGS}/explain/clip-{{prompts}}-{{clip_method}}-{{shard}}.log",
    benchmark:
        f"{BENCHMARKS}/explain/clip-{{prompts}}-{{clip_method}}-{{shard}}.tsv"
    resources:
        gpu=GPU,
    threads: job_threads("clip")
    shell:
        "traitpipe job explain --config {params.run_config:q} --method {wildcards.clip_method:q}"
        " --prompts {wildcards.prompts:q} --threads {threads} --images {input.images:q} --weights {input.weights:q}"
        " --description {input.description:q} --maps {params.maps:q} --cams {output.cams:q}"
        " --failures {output.failures:q} > {log:q} 2>&1"
