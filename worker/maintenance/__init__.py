"""Maintenance jobs (config/maintenance.yaml): spec (the YAML model), catalog (the tables, columns
and functions a job names, checked against the monitored database), jobs (batched runs under the
job's lock, recorded through worker.fleet.runs)."""
