"""The identifier types the data contract knows, in the order reports list them.

Plain Python: the control plane's Lambda validates destinations with `pipeline.config`, which needs
these names but has no Spark.
"""
ID_TYPES = ("email", "phone", "maid", "external_id")
