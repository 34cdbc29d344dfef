# effopt on the official Airflow image: the runtime set of requirements.txt
# installed on top, effopt itself installed as a package (its airflow.plugins
# entry point registers the plugin). dags/ and include/ are mounted by
# docker-compose.yaml, or copied here for an immutable image.
FROM apache/airflow:3.3.2-python3.11

COPY --chown=airflow:root requirements.txt /opt/effopt/requirements.txt
RUN pip install --no-cache-dir -r /opt/effopt/requirements.txt

COPY --chown=airflow:root pyproject.toml README.md /opt/effopt/
COPY --chown=airflow:root plugins/effopt /opt/effopt/plugins/effopt
RUN pip install --no-cache-dir --no-deps /opt/effopt

COPY --chown=airflow:root dags /opt/airflow/dags
COPY --chown=airflow:root include /opt/airflow/include
