DROP TABLE run_accounting;
DROP TABLE ingested_files;
DROP TABLE runs;
