"""The library the jobs call: config, inputs, the quality gate, snapshots, the run layout, manifests,
accounting, storage, metrics and logs, the Spark session and job entry arguments."""
