"""audience-relay: distribute audience segments from a data lake to ad platforms, SFTP and S3.

Installed, the wheel holds one top-level package: `audience_relay.jobs`, `.pipeline`,
`.transforms`, `.connectors`, `.orchestration`, `.report`, `.control`, `.lambdas`, `.deploy`,
`.cli` and `.testing`, so a Glue or EMR job with our wheel can import any other library. In the
checkout the sources stay in the top-level folders of those names; the entries of this folder
are links to them (setup.py maps the same folders into the wheel).
"""
