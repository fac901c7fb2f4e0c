# The local test stack's image: AWS Glue 5 (Spark 3.5, Python 3.11, Java 17, Amazon Linux 2023)
# with this checkout and its test environment, built as `./dev` builds it on any machine.
FROM public.ecr.aws/glue/aws-glue-libs:5

USER root
# The tests' servers: OpenSSH for the SFTP tests and the `sftp` service, PostgreSQL for the run
# catalog (`./dev test` installs them with apt-get on Debian; the tests run as hadoop here, so the
# image brings them); /run/sshd is sshd's privilege-separation directory, made here because the
# tests run as hadoop; /sftp becomes the `sftp-keys` volume (a new volume takes the ownership of
# the directory it covers).
RUN dnf install -y -q openssh-server openssh-clients postgresql15-server && dnf clean all \
    && mkdir -p /run/sshd /sftp /home/hadoop/audience-relay \
    && chown hadoop:hadoop /sftp /home/hadoop/audience-relay

USER hadoop
WORKDIR /home/hadoop/audience-relay
COPY --chown=hadoop:hadoop . .
# The image points Python and Spark at its own Spark (SPARK_HOME, SPARK_CONF_DIR, PYTHONPATH).
# The project runs on its pinned pyspark in .venv, as on every other machine: without them.
RUN env -u SPARK_HOME -u SPARK_CONF_DIR -u PYTHONPATH ./dev shell --help >/dev/null \
    && env -u SPARK_HOME -u SPARK_CONF_DIR -u PYTHONPATH .venv/bin/python -c \
       "import pyspark, sys; sys.exit(0 if pyspark.__file__.startswith('/home/hadoop/audience-relay/.venv/') else pyspark.__file__)"

ENTRYPOINT ["env", "-u", "SPARK_HOME", "-u", "SPARK_CONF_DIR", "-u", "PYTHONPATH"]
CMD ["./dev", "test"]
