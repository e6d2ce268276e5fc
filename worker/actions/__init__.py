"""Actions: fixes an alert proposes with their dry run, a person approves (the status page, a Slack
button, an email link), a worker runs once under the target's maintenance role (catalog, spec, store,
approve)."""
