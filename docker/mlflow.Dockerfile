# An MLflow tracking server for compose.yaml's `tracking` profile: a sqlite backend store and served artifacts,
# both in the volume at /mlflow. The job itself needs only the client (its `tracking` extra, mlflow-skinny).
ARG PYTHON_IMAGE=python:3.11-slim
FROM ${PYTHON_IMAGE}
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PATH=/opt/venv/bin:$PATH HOME=/tmp
COPY constraints.txt /tmp/constraints.txt
RUN python -m venv /opt/venv && /opt/venv/bin/pip install -c /tmp/constraints.txt mlflow \
 && mkdir -p /mlflow && chown 10001:10001 /mlflow
USER 10001:10001
EXPOSE 5000
# Host headers: the train service calls it `mlflow`; a browser on the host uses localhost or 127.0.0.1.
CMD ["mlflow", "server", "--backend-store-uri", "sqlite:////mlflow/mlflow.db", "--artifacts-destination", \
     "/mlflow/artifacts", "--host", "0.0.0.0", "--port", "5000", "--workers", "1", \
     "--allowed-hosts", "mlflow:5000,localhost:*,127.0.0.1:*"]
