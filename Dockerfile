# The local test stack's image: AWS Glue 5 (Spark 3.5, Python 3.11, Java 17, Amazon Linux 2023)
# with this checkout and its test environment, built as `./dev` builds it on any machine.
FROM public.ecr.aws/glue/aws-glue-libs:5

USER root
# OpenSSH for the SFTP tests and the `sftp` service (.ci/run installs it the same way when missing);
# /run/sshd is sshd's privilege-separation directory, made here because the tests run as hadoop;
# /sftp becomes the `sftp-keys` volume (a new volume takes the ownership of the directory it covers).
RUN dnf install -y -q openssh-server openssh-clients && dnf clean all \
    && mkdir -p /run/sshd /sftp && chown hadoop:hadoop /sftp

USER hadoop
WORKDIR /home/hadoop/audience-relay
COPY --chown=hadoop:hadoop . .
# Creates .venv and installs the project with its test extras (the image's own pyspark stays unused).
RUN ./dev shell --help >/dev/null

# The image's entrypoint is a shell; the services name their commands in full.
ENTRYPOINT []
CMD ["./dev", "test"]
