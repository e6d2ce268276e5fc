"""Leaf infrastructure every domain builds on, importing none of them: settings, errors, logs, db,
YAML with line numbers, durations and schedules, shared field types, task and queue names, the SQL
lexer, migrations, and the job-run recorder with the fleet's advisory-lock keys."""
