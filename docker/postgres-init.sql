-- The effopt store lives in its own database next to Airflow's metadata DB.
CREATE DATABASE effopt OWNER airflow;
