"""effopt: make ML production on Airflow cheaper and faster.

The package root imports nothing heavy: Airflow loads it in every process
(scheduler, API server, DAG processor, every task), so each capability is a
subpackage imported on use.
"""

__version__ = "0.1.0"
