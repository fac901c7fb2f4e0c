"""docker-compose.yml and the Dockerfile, checked without a Docker engine (none runs here or in CI).

The Compose file is validated against the Compose specification's JSON schema (vendored by
check-jsonschema); the `tests` service must run what .ci/run runs; the image must be the
public Glue 5 image; the servers must be the modules the tests use and publish on 127.0.0.1 only.
"""
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def schema_check(path: Path) -> subprocess.CompletedProcess:
    checker = Path(sys.executable).with_name("check-jsonschema")
    return subprocess.run([str(checker), "--builtin-schema", "vendor.compose-spec", str(path)], capture_output=True, text=True)


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_the_compose_file_follows_the_compose_specification():
    checked = schema_check(ROOT / "docker-compose.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_schema_check_fails_on_a_compose_file_that_breaks_the_specification(tmp_path):
    broken = tmp_path / "docker-compose.yml"
    broken.write_text("services:\n  tests:\n    image: x\n    command: {not: a command}\n    restart_policy: always\n")
    checked = schema_check(broken)
    assert checked.returncode == 1 and "restart_policy" in checked.stdout + checked.stderr


def test_the_tests_service_and_the_image_run_what_ci_runs():
    ci_commands = [line for line in (ROOT / ".ci" / "run").read_text().splitlines()
                   if line.startswith("./dev ")]
    assert ci_commands == ["./dev test"]
    assert compose()["services"]["tests"]["command"] == shlex.split(ci_commands[0])
    dockerfile = (ROOT / "Dockerfile").read_text().splitlines()
    assert "FROM public.ecr.aws/glue/aws-glue-libs:5" in dockerfile and "USER hadoop" in dockerfile
    assert 'CMD ["./dev", "test"]' in dockerfile
    # the project's pinned pyspark, not the image's Spark
    assert 'ENTRYPOINT ["env", "-u", "SPARK_HOME", "-u", "SPARK_CONF_DIR", "-u", "PYTHONPATH"]' in dockerfile


def test_the_servers_are_the_test_emulators_on_the_stack_network_published_on_loopback_only():
    services = compose()["services"]
    assert set(services) == {"tests", "moto", "sftp", "emulator"}
    for name in ("moto", "sftp", "emulator"):
        command = services[name]["command"]
        module = command[command.index("-m") + 1].replace(".", "/") + ".py" if "-m" in command else command[1]
        assert (ROOT / module).is_file(), (name, module)
        assert all(port.startswith("127.0.0.1:") for port in services[name]["ports"]), name
    assert all(service["networks"] == ["relay"] for service in services.values())
