"""Backlog reprocessing (seed 000's recovery): spec (config/backlogs.yaml), arguments (the tasks'
kwargs, validated), confirmations (numbers, emails, provider calls), claims (the SQL), runs
(reprocess and resend_failed, recorded), status."""
