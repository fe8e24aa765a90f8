"""Collections: the synthetic collection, manifest ingest, the image reader, shards."""

from traitpipe.collection.images import ImageError, image_id, read_image
from traitpipe.collection.manifest import ManifestError, read_manifest
from traitpipe.collection.shards import plan_shards, shard_rows
from traitpipe.collection.synthetic import synthesize

__all__ = ["ImageError", "ManifestError", "image_id", "plan_shards", "shard_rows",
           "read_image", "read_manifest", "synthesize"]
