"""Spot placement (plain Python, no Airflow import)."""
