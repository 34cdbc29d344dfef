"""Airflow hooks: effopt's external systems, configured from Airflow connections and ``[effopt]``."""
