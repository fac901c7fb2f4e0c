"""The AWS services the product calls, one thin module each; the only package that imports boto3
(an import contract checks it). Clients are made in clients.py; the service modules hold the calls
more than one layer makes (a paginated listing, a secret's value, starting an execution)."""
