"""audience-relay: distribute audience segments from a data lake to ad platforms, SFTP and S3."""
from setuptools import find_packages, setup

# Pinned to the AWS Glue 5.1 runtime (Spark 3.5.6, Python 3.11) so local runs match production.
# Spark 3.5's Arrow/pandas paths predate pandas 3 and numpy 2, hence the caps.
# pyspark is an extra: Glue and EMR provide Spark, and a wheel that required it would make
# Glue's `--additional-python-modules` install a second pyspark over the platform's.
SPARK = ["pyspark==3.5.6"]
RUNTIME = [
    "pyarrow>=15,<18",
    "pandas>=2.0,<2.3",
    "numpy>=1.24,<2",
    "pyyaml>=6",
    "pydantic>=2.6,<3",
    "boto3>=1.34",
    "requests>=2.31",
    "paramiko>=3.4",
    "google-auth>=2.30,<3",   # Google's OAuth 2.0 service-account tokens (connectors/destinations/google/oauth.py)
    "requests-oauthlib>=2.0,<3",   # OAuth 2.0 refresh-token grants (connectors/http/oauth2.py): Snapchat, LinkedIn, Pinterest
    "phonenumbers>=9.0,<10",  # libphonenumber: phone validity and E.164 (transforms/phone_numbers.py)
]
TEST = [
    "pytest>=8",
    # The reference the quality gate's verdicts are checked against (tests/unit/test_quality.py):
    # the gate evaluates great-expectations' expectations on counts prepare takes in its one pass.
    "great-expectations==1.24.1",
    "pytest-xdist>=3.5",  # -n 2 in pytest.ini: tests wait on processes, leases and rate limits
    "import-linter>=2.1",  # the layering contracts (.importlinter), checked by `./dev test` before the suite
    "chispa>=0.10",
    "moto[server]==5.2.5",
    "cfn-lint>=1.0",
    "check-jsonschema==0.39.0",  # its vendored Compose specification schema checks docker-compose.yml
    # Google's published API description (static discovery documents) and the client built from it:
    # the reference our Google requests are checked against (tests/unit/connectors/test_google_conformance.py).
    "google-api-python-client>=2.190",
    "jsonschema>=4.20",
    # Meta's official Business SDK: the reference our Meta requests are checked against
    # (tests/unit/connectors/test_meta_conformance.py).
    "facebook_business>=26,<27",  # the Graph API version the example config calls is its own
    # Google's own Data Manager formatting utility: the reference for Google's email rule
    # (tests/unit/test_email_rules.py).
    "google-ads-datamanager-util>=0.4",
    # Pinterest's SDK (its client generated from Pinterest's OpenAPI description): the reference our
    # Pinterest requests are checked against (tests/unit/connectors/test_pinterest.py).
    "pinterest-api-sdk==0.2.7",
    # Google's Google Ads API client: the reference for feedback's report request and the versions
    # Google still serves (tests/unit/connectors/test_google_ads_report_conformance.py).
    "google-ads>=34",
]
# `audience-relay run` and the demo execute the state machines locally: moto's Step Functions
# engine (with a local AWS), and jsonata-python for the JSONata expressions moto leaves unevaluated.
# The testing package (testing/: the emulators and the reference) needs the same: its moto server.
LOCAL = [
    "moto[server]==5.2.5",
    "jsonata-python==0.7.1",
]
# The run catalog (`audience-relay catalog`, the ingest windows' records): PostgreSQL through
# psycopg 3, schema changes applied by yoyo-migrations.
CATALOG = [
    "psycopg[binary]>=3.2,<4",
    "yoyo-migrations>=9,<10",
]
# bench/: the peers (DuckDB), process-tree memory sampling and the plot.
BENCH = [
    "duckdb==1.1.3",
    "psutil>=5.9",
    "matplotlib>=3.8",
]
# `audience-relay deploy` builds the wheel with `python -m build --no-isolation` in this environment.
DEPLOY = [
    "build>=1.2",
    "setuptools>=70.1",  # builds wheels itself (no `wheel` package)
]
DEV = TEST + LOCAL + BENCH + DEPLOY + CATALOG

# One top-level name installed: the sources stay in the top-level folders users know and the
# wheel holds them as `audience_relay.<folder>` (audience_relay/ in the checkout links to them).
LAYERS = ["transforms", "connectors", "orchestration", "pipeline", "jobs", "report", "control", "lambdas", "deploy", "cli", "testing"]
PACKAGES = ["audience_relay"] + [f"audience_relay.{name}" for name in find_packages(include=[f"{layer}*" for layer in LAYERS])]
PACKAGE_DIR = {"audience_relay": "audience_relay", **{f"audience_relay.{layer}": layer for layer in LAYERS}}

setup(
    name="audience-relay",
    version="0.1.0",
    description=__doc__,
    python_requires=">=3.11,<3.12",
    packages=PACKAGES,
    package_dir=PACKAGE_DIR,
    package_data={"audience_relay.pipeline": ["defaults/*.yaml", "log4j2-redacting.properties"],
                  "audience_relay.connectors.catalog": ["migrations/*.sql"]},
    install_requires=RUNTIME,
    extras_require={"spark": SPARK, "test": SPARK + TEST + LOCAL + BENCH + DEPLOY + CATALOG, "local": SPARK + LOCAL, "testing": LOCAL, "bench": BENCH, "catalog": CATALOG, "dev": SPARK + DEV},
    entry_points={"console_scripts": ["audience-relay=audience_relay.cli.main:main"]},
)
